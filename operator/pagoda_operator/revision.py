"""The spec's tiers as TierConfigs: what each tier's pods run, hashed into its revision."""

from __future__ import annotations

from .api.spec import LLMDeploymentSpec
from .api.tier_config import TierConfig


def primary_config(spec: LLMDeploymentSpec) -> TierConfig:
    return TierConfig(
        tier="primary",
        served_name=spec.model.name,
        source=spec.model.source,
        engine=spec.engine,
        image=spec.image,
        image_pull_policy=spec.image_pull_policy,
        resources=spec.resources,
        serving=spec.serving,
        pod_annotations=spec.pod_annotations,
        env=spec.env,
    )


def fallback_config(spec: LLMDeploymentSpec) -> TierConfig | None:
    fallback = spec.fallback
    if fallback is None:
        return None
    return TierConfig(
        tier="fallback",
        served_name=spec.model.name,  # clients keep their model name when traffic moves
        source=fallback.model.source,
        engine=fallback.engine,
        image=fallback.image or spec.image,
        image_pull_policy=spec.image_pull_policy,
        resources=fallback.resources,
        serving=spec.serving,
        pod_annotations=spec.pod_annotations,
        env=spec.env,
    )
