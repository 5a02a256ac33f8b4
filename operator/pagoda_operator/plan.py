"""The whole reconciliation as one pure function: (LLMDeployment, observed world, now) -> what
to apply, what to delete, the new status, and the transitions to announce."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from .api import LLMDeploymentSpec, LLMDeploymentStatus
from .api.status import Phase, Revisions
from .conditions import Transition, merge_conditions, transitions
from .health import SEVERITY, PodProblem, pod_problem
from .naming import (
    LABEL_REVISION,
    LABEL_TIER,
    Owner,
    config_map_name,
    deployment_name,
    selector_string,
    tier_selector,
)
from .network import disruption_budget, endpoint, service
from .observed import DeploymentState, GpuQuota, pod_gpus, pod_tier
from .quota import plan_gpus
from .revision import TierConfig, fallback_config, primary_config
from .rollout import decide_rollout
from .tiers import decide_tier
from .verdict import Verdict
from .workload import deployment, engine_config_map

MAX_LISTED_PROBLEMS = 5


@dataclass(frozen=True)
class World:
    """Everything read from the API for one LLMDeployment."""

    resource: dict
    deployments: dict[str, dict] = field(default_factory=dict)  # by tier
    pods: list[dict] = field(default_factory=list)
    quotas: list[dict] = field(default_factory=list)
    config_maps: list[dict] = field(default_factory=list)  # its revision ConfigMaps
    now: datetime = field(default_factory=datetime.now)


@dataclass(frozen=True)
class Plan:
    apply: list[dict]
    delete: list[dict]  # {"apiVersion", "kind", "name"} of children to remove
    status: dict
    transitions: list[Transition]
    requeue_after: float | None

    def status_changed(self, stored: dict | None) -> bool:
        return (stored or {}) != self.status


def plan(world: World) -> Plan:
    meta = world.resource["metadata"]
    owner = Owner(meta["namespace"], meta["name"], meta["uid"])
    generation = meta.get("generation", 0)
    spec = LLMDeploymentSpec.model_validate(world.resource["spec"])
    previous = LLMDeploymentStatus.model_validate(world.resource.get("status") or {})
    now = world.now.replace(microsecond=0)

    primary_config_now = primary_config(spec)
    fallback_config_now = fallback_config(spec)
    primary = _deployment_state(world, "primary")
    fallback = _deployment_state(world, "fallback") if fallback_config_now else None
    # Only what this LLMDeployment owns: a labelled look-alike is never read back or deleted.
    config_maps = [cm for cm in world.config_maps if _owned_by(cm, owner)]
    stored = _stored_configs(config_maps)

    tier = decide_tier(
        spec.fallback,
        primary.ready if primary else 0,
        fallback.ready if fallback else 0,
        previous.active_tier,
        previous.tier_clock,
        now,
    )
    gpus = plan_gpus(
        spec,
        tier.fallback_replicas,
        owner.namespace,
        GpuQuota.tightest(world.quotas),
        ours=sum(pod_gpus(p) for p in world.pods),
    )
    rollout = decide_rollout(
        primary_config_now,
        previous.revisions,
        primary,
        stored.get(previous.revisions.last_ready or ""),
        spec.rollout.progress_deadline_seconds,
        gpus.strategy,
        gpus.surge_note,
    )

    deadline = spec.rollout.progress_deadline_seconds
    apply = [
        engine_config_map(owner, rollout.render),
        deployment(owner, rollout.render, spec.replicas, gpus.strategy, deadline),
    ]
    if fallback_config_now:
        apply += [
            engine_config_map(owner, fallback_config_now),
            deployment(owner, fallback_config_now, tier.fallback_replicas, gpus.strategy, deadline),
        ]
    apply += [service(owner, spec.serving.port, tier.active), disruption_budget(owner)]
    delete = _obsolete(world, config_maps, owner, apply, fallback_config_now, rollout.revisions)

    url = endpoint(owner, spec.serving.port)
    degraded = _degraded(world.pods, [d for d in (primary, fallback) if d])
    active_ready = (
        (fallback.ready if fallback else 0)
        if tier.active == "fallback"
        else (primary.ready if primary else 0)
    )
    active_wanted = tier.fallback_replicas if tier.active == "fallback" else spec.replicas
    ready = _ready(tier.active, active_ready, active_wanted, url)
    verdicts = {
        "Ready": ready,
        "Progressing": rollout.progressing,
        "Degraded": degraded,
        "FallbackActive": tier.verdict,
        "QuotaExceeded": gpus.verdict,
        "RolledBack": rollout.rolled_back,
    }
    conditions = merge_conditions(previous.conditions, verdicts, generation, now)
    status = LLMDeploymentStatus(
        phase=_phase(ready, rollout.progressing, degraded, tier.active),
        observed_generation=generation,
        replicas=primary.replicas if primary else 0,
        ready_replicas=primary.ready if primary else 0,
        updated_replicas=primary.updated if primary else 0,
        fallback_replicas=fallback.replicas if fallback else 0,
        fallback_ready_replicas=fallback.ready if fallback else 0,
        active_tier=tier.active,
        endpoint=url,
        selector=selector_string(tier_selector(owner.name, "primary")),
        gpus=gpus.accounting,
        revisions=rollout.revisions,
        tier_clock=tier.clock,
        conditions=conditions,
    )
    requeue = (tier.wake_at - now).total_seconds() if tier.wake_at else None
    return Plan(
        apply=apply,
        delete=delete,
        status=status.model_dump(mode="json", by_alias=True, exclude_none=True),
        transitions=transitions(previous.conditions, conditions),
        requeue_after=requeue,
    )


def _deployment_state(world: World, tier: str) -> DeploymentState | None:
    found = world.deployments.get(tier)
    return DeploymentState.from_object(found) if found else None


def _stored_configs(config_maps: list[dict]) -> dict[str, TierConfig]:
    """Primary revisions recorded in ConfigMaps, by revision."""
    configs = {}
    for cm in config_maps:
        labels = cm["metadata"].get("labels", {})
        text = (cm.get("data") or {}).get("revision.json")
        if labels.get(LABEL_TIER) == "primary" and text:
            config = TierConfig.model_validate_json(text)
            if config.revision == labels.get(LABEL_REVISION):
                configs[config.revision] = config
    return configs


def _owned_by(obj: dict, owner: Owner) -> bool:
    return any(ref.get("uid") == owner.uid for ref in obj["metadata"].get("ownerReferences") or [])


def _obsolete(
    world: World,
    config_maps: list[dict],
    owner: Owner,
    apply: list[dict],
    fallback: TierConfig | None,
    revisions: Revisions,
) -> list[dict]:
    """Children that no longer belong: the fallback Deployment once spec.fallback is gone, and
    revision ConfigMaps neither in use nor kept for a rollback."""
    keep = {obj["metadata"]["name"] for obj in apply if obj["kind"] == "ConfigMap"}
    if revisions.last_ready:
        keep.add(config_map_name(owner.name, "primary", revisions.last_ready))
    delete = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": cm["metadata"]["name"]}
        for cm in config_maps
        if cm["metadata"]["name"] not in keep
    ]
    old_fallback = world.deployments.get("fallback")
    if fallback is None and old_fallback is not None and _owned_by(old_fallback, owner):
        name = deployment_name(owner.name, "fallback")
        delete.append({"apiVersion": "apps/v1", "kind": "Deployment", "name": name})
    return delete


def _degraded(pods: list[dict], deployments: list[DeploymentState]) -> Verdict:
    problems: list[tuple[str | None, PodProblem]] = [
        (pod_tier(pod), problem) for pod in pods if (problem := pod_problem(pod)) is not None
    ]
    problems.sort(key=lambda found: (SEVERITY.index(found[1].reason), found[1].pod))
    lines = [f"[{tier}] {problem.message}" for tier, problem in problems]
    lines += [f"cannot create pods: {d.replica_failure}" for d in deployments if d.replica_failure]
    if not lines:
        return Verdict(False, "Healthy", "no worker pod reports a problem")
    reason = problems[0][1].reason if problems else "FailedCreate"
    shown = "; ".join(lines[:MAX_LISTED_PROBLEMS])
    if len(lines) > MAX_LISTED_PROBLEMS:
        shown += f"; and {len(lines) - MAX_LISTED_PROBLEMS} more"
    return Verdict(True, reason, shown)


def _ready(tier: str, ready: int, wanted: int, url: str) -> Verdict:
    if ready:
        return Verdict(True, "Serving", f"{ready}/{wanted} {tier} pods ready; OpenAI API at {url}")
    if wanted == 0:
        return Verdict(False, "ScaledToZero", f"the {tier} tier has 0 replicas")
    return Verdict(
        False,
        "NoReadyPods",
        f"no {tier} pod is ready yet (0/{wanted}); see the Progressing and Degraded conditions",
    )


def _phase(ready: Verdict, progressing: Verdict, degraded: Verdict, active: str) -> Phase:
    if not ready.status:
        return "Degraded" if degraded.status else "Pending"
    if degraded.status or active == "fallback":
        return "Degraded"
    if progressing.status:
        return "Progressing"
    return "Ready"
