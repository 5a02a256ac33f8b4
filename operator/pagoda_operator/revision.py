"""A tier's pod configuration as one value, and its content hash (the revision)."""

from __future__ import annotations

import hashlib
import json

from pydantic import Field

from .api.base import ApiModel
from .api.env import EnvVar
from .api.spec import (
    EngineSpec,
    LLMDeploymentSpec,
    ModelSource,
    ResourcesSpec,
    ServingSpec,
)
from .api.status import Tier


class TierConfig(ApiModel):
    """Everything that shapes a tier's pods. Stored in the revision's ConfigMap, so a rollback
    can render an earlier revision after the spec has moved on."""

    tier: Tier
    served_name: str
    source: ModelSource
    engine: EngineSpec
    image: str
    image_pull_policy: str
    resources: ResourcesSpec
    serving: ServingSpec
    pod_annotations: dict[str, str] = Field(default_factory=dict)
    # Left out of dumps while empty, so the revision hash of a spec without env stays the same.
    env: list[EnvVar] = Field(default_factory=list, exclude_if=lambda env: not env)

    @property
    def revision(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:10]


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
