"""The whole reconciliation as one pure function: (LLMDeployment, observed world, now) -> what
to apply, what to delete, the new status, and the transitions to announce."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import ValidationError

from .api import CONDITION_TYPES, LLMDeploymentSpec, LLMDeploymentStatus
from .api.status import Phase
from .capacity import fallback_fit
from .conditions import Transition, merge_conditions, transitions
from .gateway import gateway_objects, gateway_refs, tier_service_ref
from .gateway_health import GatewayHealth, gateway_health, service_target, through_gateway
from .handover import primary_scale
from .health import SEVERITY, PodProblem, pod_crash, pod_problem, ready_since
from .naming import (
    LABEL_REVISION,
    Owner,
    config_map_name,
    deployment_name,
    gateway_name,
    gateway_selector,
    selector_string,
    tier_selector,
)
from .network import disruption_budget, endpoint, service
from .observed import DeploymentState, GpuQuota, pod_gpus, pod_tier
from .quota import plan_gpus
from .records import RevisionRecord, read_records
from .rejection import Rejection, rejected_verdict
from .revision import fallback_config, primary_config
from .rollout import RevisionTrouble, RolloutDecision, decide_rollout
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
    config_maps: list[dict] = field(default_factory=list)  # revisions', and the gateway's
    gateway: dict | None = None  # the gateway Deployment
    gateway_pods: list[dict] = field(default_factory=list)
    nodes: list[dict] = field(default_factory=list)  # read only when there is a fallback tier
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


def plan(world: World, rejections: tuple[Rejection, ...] = ()) -> Plan:
    """`rejections`: children the apiserver refused when this plan was applied; planning again
    with them gives the status that says so."""
    meta = world.resource["metadata"]
    owner = Owner(meta["namespace"], meta["name"], meta["uid"])
    generation = meta.get("generation", 0)
    previous = LLMDeploymentStatus.model_validate(world.resource.get("status") or {})
    now = world.now.replace(microsecond=0)
    try:
        spec = LLMDeploymentSpec.model_validate(world.resource["spec"])
    except ValidationError as error:
        return _unreadable(previous, generation, now, error)

    primary_config_now = primary_config(spec)
    fallback_config_now = fallback_config(spec)
    primary = _deployment_state(world, "primary")
    fallback = _deployment_state(world, "fallback") if fallback_config_now else None
    # Only what this LLMDeployment owns: a labelled look-alike is never read back or deleted.
    config_maps = [cm for cm in world.config_maps if _owned_by(cm, owner)]
    records = read_records(config_maps)

    tier = decide_tier(
        spec.fallback,
        primary.ready if primary else 0,
        fallback.ready if fallback else 0,
        previous.active_tier,
        previous.tier_clock,
        now,
    )
    scale = primary_scale(
        spec.replicas, spec.fallback, tier, world.pods, primary, primary_config_now.revision
    )
    gpus = plan_gpus(
        spec,
        tier.fallback_replicas,
        owner.namespace,
        GpuQuota.tightest(world.quotas),
        ours=sum(pod_gpus(p) for p in world.pods),
        primary_replicas=scale.replicas,
    )
    rollout = decide_rollout(
        primary_config_now,
        records,
        primary,
        _trouble(world.pods, primary_config_now.revision),
        _ready_since(world.pods),
        spec.rollout,
        gpus.strategy,
        gpus.surge_note,
        now,
    )

    apply = [
        engine_config_map(owner, record.config, record.annotations())
        for record in _primary_revisions(rollout, records)
    ]
    apply.append(deployment(owner, rollout.render, scale.replicas, gpus.strategy, spec.rollout))
    if fallback_config_now:
        apply += [
            engine_config_map(owner, fallback_config_now),
            deployment(
                owner, fallback_config_now, tier.fallback_replicas, gpus.strategy, spec.rollout
            ),
        ]
    ours = world.gateway is not None and _owned_by(world.gateway, owner)
    gateway_state = DeploymentState.from_object(world.gateway) if ours else None
    target = service_target(
        spec.gateway, gateway_state.ready if gateway_state else 0, previous.service_target
    )
    if spec.gateway is not None:
        apply += gateway_objects(owner, spec, tier.active)
    front = (
        gateway_selector(owner.name)  # clients go through the gateway
        if target == "gateway"
        else tier_selector(owner.name, tier.active)
    )
    apply += [service(owner, spec.serving.port, front), disruption_budget(owner)]
    keep = {rollout.revisions.last_ready, primary.revision if primary else None}
    keep |= {_pod_revision(p) for p in world.pods if pod_tier(p) == "primary"}
    delete = _obsolete(world, config_maps, owner, apply, spec, keep)

    url = endpoint(owner, spec.serving.port)
    degraded = _degraded(world.pods, [d for d in (primary, fallback) if d])
    active_ready = (
        (fallback.ready if fallback else 0)
        if tier.active == "fallback"
        else (primary.ready if primary else 0)
    )
    active_wanted = tier.fallback_replicas if tier.active == "fallback" else spec.replicas
    ever_ready = rollout.revisions.last_ready is not None
    gateway = gateway_health(owner.name, spec.gateway, gateway_state, world.gateway_pods, target)
    ready = _ready(tier.active, active_ready, active_wanted, url, ever_ready)
    ready = through_gateway(ready, gateway, target)
    up_to_date = rollout.up_to_date
    if rejections:
        ready = up_to_date = rejected_verdict(rejections, _serving(ready))
    verdicts = {
        "Ready": ready,
        "UpToDate": up_to_date,
        "Progressing": rollout.progressing,
        "Degraded": degraded,
        "FallbackActive": _fallback_verdict(spec, tier.verdict, scale.note, world.nodes),
        "QuotaExceeded": gpus.verdict,
        "RolledBack": rollout.rolled_back,
        "GatewayReady": gateway.verdict,
    }
    conditions = merge_conditions(previous.conditions, verdicts, generation, now)
    status = LLMDeploymentStatus(
        phase=_phase(ready, rollout, degraded, gateway, tier.active, bool(rejections)),
        observed_generation=generation,
        replicas=primary.replicas if primary else 0,
        ready_replicas=primary.ready if primary else 0,
        updated_replicas=primary.updated if primary else 0,
        fallback_replicas=fallback.replicas if fallback else 0,
        fallback_ready_replicas=fallback.ready if fallback else 0,
        gateway_replicas=gateway.replicas,
        gateway_ready_replicas=gateway.ready,
        service_target=target,
        active_tier=tier.active,
        model=_serving_model(rollout.records, rollout.revisions.last_ready),
        endpoint=url,
        selector=selector_string(tier_selector(owner.name, "primary")),
        gpus=gpus.accounting,
        revisions=rollout.revisions,
        tier_clock=tier.clock,
        conditions=conditions,
    )
    wake_at = min(filter(None, (tier.wake_at, rollout.wake_at)), default=None)
    requeue = (wake_at - now).total_seconds() if wake_at else None
    return Plan(
        apply=apply,
        delete=delete,
        status=status.model_dump(mode="json", by_alias=True, exclude_none=True),
        transitions=transitions(previous.conditions, conditions),
        requeue_after=requeue,
    )


def _unreadable(
    previous: LLMDeploymentStatus, generation: int, now: datetime, error: ValidationError
) -> Plan:
    """A stored spec the model rejects (stored under an older, looser CRD): nothing is applied,
    the children stay as they are, and status says what to fix."""
    problems = "; ".join(f"spec.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
    refused = Verdict(
        False,
        "InvalidSpec",
        f"the spec is invalid (stored before the CRD's current validation): {problems}. Fix it"
        " and apply it again; until then nothing is changed",
    )
    kept = {c.type: Verdict(c.status == "True", c.reason, c.message) for c in previous.conditions}
    unknown = Verdict(False, "InvalidSpec", "not evaluated: the spec is invalid")
    verdicts = {kind: kept.get(kind, unknown) for kind in CONDITION_TYPES}
    verdicts |= {"Ready": refused, "UpToDate": refused}
    conditions = merge_conditions(previous.conditions, verdicts, generation, now)
    status = previous.model_copy(
        update={"phase": "Failed", "observed_generation": generation, "conditions": conditions}
    )
    return Plan(
        apply=[],
        delete=[],
        status=status.model_dump(mode="json", by_alias=True, exclude_none=True),
        transitions=transitions(previous.conditions, conditions),
        requeue_after=None,
    )


def _deployment_state(world: World, tier: str) -> DeploymentState | None:
    found = world.deployments.get(tier)
    return DeploymentState.from_object(found) if found else None


def _trouble(pods: list[dict], revision: str) -> RevisionTrouble:
    """How the primary pods of `revision` fare: the first crash, and the worst problem."""
    mine = [p for p in pods if pod_tier(p) == "primary" and _pod_revision(p) == revision]
    crashes = sorted(filter(None, map(pod_crash, mine)))
    problems = sorted(
        filter(None, map(pod_problem, mine)), key=lambda p: (SEVERITY.index(p.reason), p.pod)
    )
    return RevisionTrouble(
        crashed=crashes[0] if crashes else None,
        worst=problems[0].message if problems else None,
    )


def _ready_since(pods: list[dict]) -> dict[str, datetime]:
    """Primary revisions whose pods (those not on their way out) are all ready and never
    restarted: since when the last of them is ready."""
    found: dict[str | None, list[datetime | None]] = defaultdict(list)
    for pod in pods:
        if pod_tier(pod) == "primary" and not pod["metadata"].get("deletionTimestamp"):
            found[_pod_revision(pod)].append(ready_since(pod))
    return {rev: max(times) for rev, times in found.items() if rev and all(times)}


def _pod_revision(pod: dict) -> str | None:
    return pod["metadata"].get("labels", {}).get(LABEL_REVISION)


def _primary_revisions(
    rollout: RolloutDecision, read: dict[str, RevisionRecord]
) -> list[RevisionRecord]:
    """The primary ConfigMaps to apply, with their facts: the spec's revision (which keeps a
    rollback's memory), the one that runs, and any whose facts changed (an earlier revision
    that became ready while the next one rolled out)."""
    changed = [r for r, record in rollout.records.items() if record != read.get(r)]
    revisions = dict.fromkeys([rollout.revisions.desired, rollout.render.revision, *changed])
    return [rollout.records[r] for r in revisions]


def _serving_model(records: dict[str, RevisionRecord], last_ready: str | None) -> str:
    return records[last_ready].config.served_name if last_ready in records else ""


def _owned_by(obj: dict, owner: Owner) -> bool:
    return any(ref.get("uid") == owner.uid for ref in obj["metadata"].get("ownerReferences") or [])


def _obsolete(
    world: World,
    config_maps: list[dict],
    owner: Owner,
    apply: list[dict],
    spec: LLMDeploymentSpec,
    keep_revisions: set[str | None],
) -> list[dict]:
    """Children that no longer belong: the fallback Deployment (and the gateway's standby
    Service) once spec.fallback is gone; every gateway object once spec.gateway is gone; and
    ConfigMaps neither applied, nor kept for a rollback, nor still mounted by the primary
    Deployment's template (whose update the apiserver may have refused) or its pods."""
    keep = {obj["metadata"]["name"] for obj in apply if obj["kind"] == "ConfigMap"}
    keep |= {config_map_name(owner.name, "primary", r) for r in keep_revisions if r}
    delete = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": cm["metadata"]["name"]}
        for cm in config_maps
        if cm["metadata"]["name"] not in keep
    ]
    old_fallback = world.deployments.get("fallback")
    if spec.fallback is None and old_fallback is not None and _owned_by(old_fallback, owner):
        if spec.gateway is not None:  # without a gateway, gateway_refs below include it
            delete.append(tier_service_ref(owner.name, "standby"))
        name = deployment_name(owner.name, "fallback")
        delete.append({"apiVersion": "apps/v1", "kind": "Deployment", "name": name})
    if spec.gateway is None and _had_gateway(world, config_maps, owner):
        delete += gateway_refs(owner.name)
    return delete


def _had_gateway(world: World, config_maps: list[dict], owner: Owner) -> bool:
    """Its first object (the tenants ConfigMap) or its last (the Deployment) is still there."""
    name = gateway_name(owner.name)
    if world.gateway is not None and _owned_by(world.gateway, owner):
        return True
    return any(cm["metadata"]["name"] == name for cm in config_maps)


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


def _ready(tier: str, ready: int, wanted: int, url: str, ever_ready: bool) -> Verdict:
    if ready:
        return Verdict(True, "Serving", f"{ready}/{wanted} {tier} pods ready; OpenAI API at {url}")
    if wanted == 0:
        return Verdict(False, "ScaledToZero", f"the {tier} tier has 0 replicas")
    yet = "" if ever_ready else " yet"
    return Verdict(
        False,
        "NoReadyPods",
        f"no {tier} pod is ready{yet} (0/{wanted}); see the Progressing and Degraded conditions",
    )


def _fallback_verdict(
    spec: LLMDeploymentSpec, verdict: Verdict, note: str, nodes: list[dict]
) -> Verdict:
    """FallbackActive: the tier decision, what the handover did, and, while the primary serves,
    whether the fallback could start at all."""
    if verdict.reason == "PrimaryServing" and spec.fallback:
        return fallback_fit(spec.fallback, nodes) or verdict
    if not note:
        return verdict
    return Verdict(verdict.status, verdict.reason, f"{verdict.message}; {note}")


def _serving(ready: Verdict) -> str:
    if ready.status:
        return ready.message.split(";")[0] + " (earlier revisions)"
    return "nothing serves"


def _phase(
    ready: Verdict,
    rollout: RolloutDecision,
    degraded: Verdict,
    gateway: GatewayHealth,
    active: str,
    rejected: bool,
) -> Phase:
    if rejected:
        return "Failed"
    troubled = degraded.status or gateway.troubled
    if not ready.status:
        return "Degraded" if troubled else "Pending"
    if rollout.rolled_back.status:
        return "RolledBack"
    if troubled or active == "fallback":
        return "Degraded"
    if rollout.progressing.status:
        return "Progressing"
    return "Ready"
