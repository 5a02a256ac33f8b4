"""How many primary pods run while a cold GPU fallback takes over: crash-looping primary pods
hold GPUs that the fallback may need to schedule at all, so they are scaled away. The
Deployment's controller removes unready pods first, so the ready ones keep serving."""

from __future__ import annotations

from dataclasses import dataclass

from .api.spec import FallbackSpec
from .health import pod_problem
from .observed import DeploymentState, pod_tier
from .tiers import TierDecision

CRASHING = ("CrashLoopBackOff", "OOMKilled")
TAKING_OVER = ("FallbackStarting", "PrimaryUnavailable")


@dataclass(frozen=True)
class PrimaryScale:
    replicas: int
    note: str  # what was scaled down and why; empty when nothing was


def decide_primary_scale(
    replicas: int,
    fallback: FallbackSpec | None,
    tier: TierDecision,
    pods: list[dict],
    deployed: DeploymentState | None,
    desired_revision: str,
) -> PrimaryScale:
    cold_gpu = fallback is not None and not fallback.warm and fallback.resources.gpus > 0
    if not cold_gpu or tier.verdict.reason not in TAKING_OVER:
        return PrimaryScale(replicas, "")
    crashing = sum(
        1
        for pod in pods
        if pod_tier(pod) == "primary"
        and (problem := pod_problem(pod)) is not None
        and problem.reason in CRASHING
    )
    keep = max(0, replicas - crashing)
    # Once scaled down, stay down while the fallback serves (the removed pods no longer count
    # as crashing); a new revision of the primary gets all its replicas again.
    if deployed is not None and deployed.revision == desired_revision:
        keep = min(keep, deployed.wanted)
    if keep >= replicas:
        return PrimaryScale(replicas, "")
    return PrimaryScale(
        keep,
        f"the primary is scaled to {keep} of {replicas} pods while the cold fallback takes over:"
        " its crash-looping pods were removed to free their GPUs; a new primary revision (a fixed"
        " spec) gets all its replicas back",
    )
