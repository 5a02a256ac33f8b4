"""GPU accounting against the namespace's ResourceQuota, and what it means for the rollout."""

from __future__ import annotations

from dataclasses import dataclass

from .api.spec import LLMDeploymentSpec
from .api.status import GpuAccounting
from .naming import GPU
from .observed import GpuQuota
from .strategy import Strategy
from .verdict import Verdict, count


@dataclass(frozen=True)
class GpuDecision:
    accounting: GpuAccounting
    strategy: Strategy
    verdict: Verdict  # the QuotaExceeded condition
    surge_note: str  # why the rollout runs without surge; empty when it may surge


def decide_gpus(
    spec: LLMDeploymentSpec,
    fallback_replicas: int,
    namespace: str,
    quota: GpuQuota | None,
    ours: int,
    primary_replicas: int | None = None,
) -> GpuDecision:
    """`ours`: GPUs this LLMDeployment's pods hold now (they are part of the quota's usage);
    `primary_replicas`: when the primary runs fewer than spec.replicas (handover.py)."""
    rollout = spec.rollout
    replicas = spec.replicas if primary_replicas is None else primary_replicas
    per_pod = spec.resources.gpus
    per_fallback_pod = spec.fallback.resources.gpus if spec.fallback else 0
    primary = replicas * per_pod
    fallback = fallback_replicas * per_fallback_pod
    steady = primary + fallback
    # Both tiers roll with the same strategy (and one change, e.g. of spec.image, rolls both).
    primary_surge = _surge_pods(rollout.max_surge, replicas)
    fallback_surge = _surge_pods(rollout.max_surge, fallback_replicas)
    wanted_surge = primary_surge * per_pod + fallback_surge * per_fallback_pod

    if quota is None:
        accounting = GpuAccounting(
            requested=steady + wanted_surge,
            steady=steady,
            primary=primary,
            surge=wanted_surge,
            fallback=fallback,
        )
        verdict = Verdict(
            False, "NoQuota", f"namespace {namespace} has no ResourceQuota on requests.{GPU}"
        )
        strategy = Strategy(rollout.max_surge, rollout.max_unavailable)
        return GpuDecision(accounting, strategy, verdict, "")

    others = max(0, quota.used - ours)
    available = quota.hard - others
    may_surge = wanted_surge == 0 or steady + wanted_surge <= available
    surge = wanted_surge if may_surge else 0
    accounting = GpuAccounting(
        requested=steady + surge,
        steady=steady,
        primary=primary,
        surge=surge,
        fallback=fallback,
        quota=quota.hard,
        used_by_others=others,
        headroom=available - steady - surge,
    )
    numbers = (
        f"ResourceQuota {quota.name} allows {quota.hard} GPUs in namespace {namespace} and other"
        f" pods use {others}, leaving {available}"
    )
    if may_surge:
        strategy, note = Strategy(rollout.max_surge, rollout.max_unavailable), ""
    else:
        strategy = Strategy(0, max(1, rollout.max_unavailable))
        surge_pods = count(primary_surge + fallback_surge, "pod")
        note = (
            f"rolling without surge: a surge of {surge_pods} would need {wanted_surge} GPUs but"
            f" the quota leaves {max(0, available - steady)}"
        )
    # A cold fallback holds nothing until a failover, when it must fit next to the primary.
    cold_replicas = spec.fallback.replicas if spec.fallback and not fallback_replicas else 0
    idle = cold_replicas * per_fallback_pod
    if steady > available:
        breakdown = f"{replicas} primary x {per_pod}"
        if spec.fallback:
            breakdown += f" + {fallback_replicas} fallback x {spec.fallback.resources.gpus}"
        verdict = Verdict(
            True,
            "GPUQuotaExceeded",
            f"needs {steady} GPUs ({breakdown}) but {numbers}: raise requests.{GPU} of"
            f" {quota.name} to at least {others + steady}, or lower replicas or resources.gpus",
        )
    elif steady + idle > available:
        verdict = Verdict(
            True,
            "FallbackWouldNotFit",
            f"a failover would start {cold_replicas} fallback x {per_fallback_pod} GPUs"
            f" next to the primary's {primary}, {steady + idle} in all, but {numbers}: raise"
            f" requests.{GPU} of {quota.name} to at least {others + steady + idle}, or lower"
            " fallback.replicas or fallback.resources.gpus",
        )
    else:
        message = f"requests {steady + surge} GPUs; {numbers}"
        verdict = Verdict(False, "WithinQuota", f"{message}; {note}" if note else message)
    return GpuDecision(accounting, strategy, verdict, note)


def _surge_pods(max_surge: int, replicas: int) -> int:
    """Extra pods a rolling Deployment may run: up to maxSurge (rollouts stacked on unfinished
    ones reach it even above `replicas`), none when it is scaled to zero."""
    return max_surge if replicas else 0
