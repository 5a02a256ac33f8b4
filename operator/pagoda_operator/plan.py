"""The whole reconciliation as one pure function: (LLMDeployment, observed world, now) -> what
to apply, what to delete, the new status, and the transitions to announce."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError

from .api import CONDITION_TYPES, Condition, LLMDeploymentSpec, LLMDeploymentStatus
from .api.status import Phase, ServiceTarget, Tier
from .api.tier_config import TierConfig
from .capacity import fallback_fit
from .conditions import Transition, merge_conditions, transitions
from .gateway import gateway_objects, gateway_refs, tier_service_ref
from .gateway_health import (
    GatewayHealth,
    decide_service_target,
    gateway_health,
    through_gateway,
)
from .handover import PrimaryScale, decide_primary_scale
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
from .observed import DeploymentState, GpuQuota, World, pod_gpus, pod_tier
from .quota import GpuDecision, decide_gpus
from .records import RevisionRecord, read_records
from .rejection import Rejection, rejected_verdict
from .revision import fallback_config, primary_config
from .rollout import RevisionTrouble, RolloutDecision, decide_rollout
from .tiers import TierDecision, decide_tier
from .verdict import Verdict
from .workload import deployment, engine_config_map

MAX_LISTED_PROBLEMS = 5


@dataclass(frozen=True)
class Plan:
    apply: list[dict]
    delete: list[dict]  # {"apiVersion", "kind", "name"} of children to remove
    status: dict
    transitions: list[Transition]
    requeue_after: float | None

    def status_changed(self, stored: dict | None) -> bool:
        return (stored or {}) != self.status


@dataclass(frozen=True)
class _Observed:
    """The children's states and the revision records: what plan() reads from the world."""

    primary: DeploymentState | None
    fallback: DeploymentState | None  # None as well once spec.fallback is gone
    gateway: DeploymentState | None
    config_maps: list[dict]
    records: dict[str, RevisionRecord]


@dataclass(frozen=True)
class _Decisions:
    tier: TierDecision
    scale: PrimaryScale
    gpus: GpuDecision
    rollout: RolloutDecision
    target: ServiceTarget


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

    fallback = fallback_config(spec)
    seen = _observe(world, owner, with_fallback=fallback is not None)
    decided = _decide(world, spec, owner, seen, primary_config(spec), previous, now)
    apply = _children(owner, spec, seen, decided, fallback)
    keep = _kept_revisions(world.pods, seen.primary, decided.rollout)
    delete = _obsolete(world, seen.config_maps, owner, apply, spec, keep)

    url = endpoint(owner, spec.serving.port)
    gateway = gateway_health(
        owner.name, spec.gateway, seen.gateway, world.gateway_pods, decided.target
    )
    verdicts = _verdicts(world, spec, seen, decided, gateway, url, rejections)
    conditions = merge_conditions(previous.conditions, verdicts, generation, now)
    phase = _phase(verdicts, gateway.troubled, decided.tier.active, bool(rejections))
    status = _status(owner, generation, phase, seen, decided, gateway, url, conditions)
    wake_at = min(filter(None, (decided.tier.wake_at, decided.rollout.wake_at)), default=None)
    requeue = (wake_at - now).total_seconds() if wake_at else None
    return Plan(
        apply=apply,
        delete=delete,
        status=status.model_dump(mode="json", by_alias=True, exclude_none=True),
        transitions=transitions(previous.conditions, conditions),
        requeue_after=requeue,
    )


def _observe(world: World, owner: Owner, with_fallback: bool) -> _Observed:
    # Only what this LLMDeployment owns: a labelled look-alike is never read back or deleted.
    config_maps = [cm for cm in world.config_maps if _owned_by(cm, owner)]
    gateway = world.gateway
    if gateway is not None and not _owned_by(gateway, owner):
        gateway = None
    return _Observed(
        primary=_deployment_state(world, "primary"),
        fallback=_deployment_state(world, "fallback") if with_fallback else None,
        gateway=DeploymentState.from_object(gateway) if gateway is not None else None,
        config_maps=config_maps,
        records=read_records(config_maps),
    )


def _decide(
    world: World,
    spec: LLMDeploymentSpec,
    owner: Owner,
    seen: _Observed,
    desired: TierConfig,
    previous: LLMDeploymentStatus,
    now: datetime,
) -> _Decisions:
    """Each decision in the order it needs the others: which tier serves, how many primary pods
    run, what the GPU quota allows, which revision runs, where the Service points."""
    tier = decide_tier(
        spec.fallback,
        _ready_pods(seen.primary),
        _ready_pods(seen.fallback),
        previous.active_tier,
        previous.tier_clock,
        now,
    )
    scale = decide_primary_scale(
        spec.replicas, spec.fallback, tier, world.pods, seen.primary, desired.revision
    )
    gpus = decide_gpus(
        spec,
        tier.fallback_replicas,
        owner.namespace,
        GpuQuota.tightest(world.quotas),
        ours=sum(pod_gpus(p) for p in world.pods),
        primary_replicas=scale.replicas,
    )
    rollout = decide_rollout(
        desired,
        seen.records,
        seen.primary,
        _trouble(world.pods, desired.revision),
        _ready_since(world.pods),
        spec.rollout,
        gpus.strategy,
        gpus.surge_note,
        now,
    )
    target = decide_service_target(spec.gateway, _ready_pods(seen.gateway), previous.service_target)
    return _Decisions(tier, scale, gpus, rollout, target)


def _children(
    owner: Owner,
    spec: LLMDeploymentSpec,
    seen: _Observed,
    decided: _Decisions,
    fallback: TierConfig | None,
) -> list[dict]:
    """The children to apply: each tier's ConfigMaps before the Deployment that mounts them,
    then the gateway's objects, the Service and the disruption budget."""
    rollout, tier, strategy = decided.rollout, decided.tier, decided.gpus.strategy
    apply = [
        engine_config_map(owner, record.config, record.annotations())
        for record in _primary_revisions(rollout, seen.records)
    ]
    apply.append(deployment(owner, rollout.render, decided.scale.replicas, strategy, spec.rollout))
    if fallback:
        apply += [
            engine_config_map(owner, fallback),
            deployment(owner, fallback, tier.fallback_replicas, strategy, spec.rollout),
        ]
    if spec.gateway is not None:
        apply += gateway_objects(owner, spec, tier.active)
    front = (
        gateway_selector(owner.name)  # clients go through the gateway
        if decided.target == "gateway"
        else tier_selector(owner.name, tier.active)
    )
    apply += [service(owner, spec.serving.port, front), disruption_budget(owner)]
    return apply


def _kept_revisions(
    pods: list[dict], primary: DeploymentState | None, rollout: RolloutDecision
) -> set[str | None]:
    """Primary revisions whose ConfigMaps stay although not applied: the last ready one (a
    rollback's target), and those the Deployment or its pods still mount."""
    keep = {rollout.revisions.last_ready, primary.revision if primary else None}
    return keep | {_pod_revision(p) for p in pods if pod_tier(p) == "primary"}


def _verdicts(
    world: World,
    spec: LLMDeploymentSpec,
    seen: _Observed,
    decided: _Decisions,
    gateway: GatewayHealth,
    url: str,
    rejections: tuple[Rejection, ...],
) -> dict[str, Verdict]:
    """Every condition's verdict, by condition type."""
    tier, rollout = decided.tier, decided.rollout
    degraded = _degraded(world.pods, [d for d in (seen.primary, seen.fallback) if d])
    if tier.active == "fallback":
        active_ready, active_wanted = _ready_pods(seen.fallback), tier.fallback_replicas
    else:
        active_ready, active_wanted = _ready_pods(seen.primary), spec.replicas
    ever_ready = rollout.revisions.last_ready is not None
    ready = _ready(tier.active, active_ready, active_wanted, url, ever_ready)
    ready = through_gateway(ready, gateway, decided.target)
    up_to_date = rollout.up_to_date
    if rejections:
        ready = up_to_date = rejected_verdict(rejections, _serving(ready))
    fallback_active = _fallback_verdict(spec, tier.verdict, decided.scale.note, world.nodes)
    return {
        "Ready": ready,
        "UpToDate": up_to_date,
        "Progressing": rollout.progressing,
        "Degraded": degraded,
        "FallbackActive": fallback_active,
        "QuotaExceeded": decided.gpus.verdict,
        "RolledBack": rollout.rolled_back,
        "GatewayReady": gateway.verdict,
    }


def _status(
    owner: Owner,
    generation: int,
    phase: Phase,
    seen: _Observed,
    decided: _Decisions,
    gateway: GatewayHealth,
    url: str,
    conditions: list[Condition],
) -> LLMDeploymentStatus:
    primary, fallback, rollout = seen.primary, seen.fallback, decided.rollout
    return LLMDeploymentStatus(
        phase=phase,
        observed_generation=generation,
        replicas=primary.replicas if primary else 0,
        ready_replicas=_ready_pods(primary),
        updated_replicas=primary.updated if primary else 0,
        fallback_replicas=fallback.replicas if fallback else 0,
        fallback_ready_replicas=_ready_pods(fallback),
        gateway_replicas=gateway.replicas,
        gateway_ready_replicas=gateway.ready,
        service_target=decided.target,
        active_tier=decided.tier.active,
        model=_serving_model(rollout.records, rollout.revisions.last_ready),
        endpoint=url,
        selector=selector_string(tier_selector(owner.name, "primary")),
        gpus=decided.gpus.accounting,
        revisions=rollout.revisions,
        tier_clock=decided.tier.clock,
        conditions=conditions,
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


def _ready_pods(state: DeploymentState | None) -> int:
    return state.ready if state else 0


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
    return {rev: max(filter(None, times)) for rev, times in found.items() if rev and all(times)}


def _pod_revision(pod: dict) -> str | None:
    return pod["metadata"].get("labels", {}).get(LABEL_REVISION)


def _primary_revisions(
    rollout: RolloutDecision, read: dict[str, RevisionRecord]
) -> list[RevisionRecord]:
    """The primary ConfigMaps to apply, with their facts: the spec's revision (which keeps a
    rollback's memory), the one that runs, and any whose facts changed (an earlier revision
    that became ready while the next one rolled out)."""
    desired = rollout.revisions.desired
    assert desired is not None, "decide_rollout always names the spec's revision"
    changed = [r for r, record in rollout.records.items() if record != read.get(r)]
    revisions = dict.fromkeys([desired, rollout.render.revision, *changed])
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
    verdicts: dict[str, Verdict], gateway_troubled: bool, active: Tier, rejected: bool
) -> Phase:
    if rejected:
        return "Failed"
    troubled = verdicts["Degraded"].status or gateway_troubled
    if not verdicts["Ready"].status:
        return "Degraded" if troubled else "Pending"
    if verdicts["RolledBack"].status:
        return "RolledBack"
    if troubled or active == "fallback":
        return "Degraded"
    if verdicts["Progressing"].status:
        return "Progressing"
    return "Ready"
