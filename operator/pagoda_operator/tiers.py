"""Which tier serves: promote the fallback when the primary fails for long enough, hand traffic
back once the primary has been healthy for long enough (two windows, hence no flapping)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from .api.spec import FallbackSpec
from .api.status import Tier, TierClock
from .verdict import Verdict, stamp


@dataclass(frozen=True)
class TierDecision:
    active: Tier
    clock: TierClock
    fallback_replicas: int
    verdict: Verdict  # the FallbackActive condition
    wake_at: datetime | None  # when this decision must be made again, whatever happens


def decide_tier(
    fallback: FallbackSpec | None,
    primary_ready: int,
    fallback_ready: int,
    active: Tier,
    clock: TierClock,
    now: datetime,
) -> TierDecision:
    if fallback is None:
        verdict = Verdict(False, "NoFallback", "no fallback tier is configured (spec.fallback)")
        return TierDecision("primary", TierClock(), 0, verdict, None)
    need = fallback.min_primary_ready
    healthy = primary_ready >= need
    idle_replicas = fallback.replicas if fallback.warm else 0
    health = f"primary has {primary_ready} ready pods (fallback.minPrimaryReady is {need})"

    if active == "primary":
        if healthy:
            kind = "warm" if fallback.warm else "cold"
            message = f"{health}; the {kind} fallback has {fallback_ready} ready pods"
            verdict = Verdict(False, "PrimaryServing", message)
            return TierDecision("primary", TierClock(), idle_replicas, verdict, None)
        since = clock.primary_unavailable_since or now
        promote_at = since + timedelta(seconds=fallback.promote_after_seconds)
        clock = TierClock(primary_unavailable_since=since)
        if now < promote_at:
            message = (
                f"{health} since {stamp(since)}; traffic moves to the fallback at"
                f" {stamp(promote_at)} unless the primary recovers"
            )
            verdict = Verdict(False, "PromotionPending", message)
            return TierDecision("primary", clock, idle_replicas, verdict, promote_at)
        if fallback_ready == 0:
            if fallback.warm:
                start = "the warm fallback has no ready pod yet"
            else:
                start = "starting the cold fallback"
            message = (
                f"{health} since {stamp(since)}; {start}, traffic moves once one of its"
                f" {fallback.replicas} pods is ready"
            )
            verdict = Verdict(False, "FallbackStarting", message)
            return TierDecision("primary", clock, fallback.replicas, verdict, None)
        return _serving_fallback(fallback, fallback_ready, health, since)

    if not healthy:
        since = clock.primary_unavailable_since or now
        return _serving_fallback(fallback, fallback_ready, health, since)
    recovered = clock.primary_recovered_since or now
    demote_at = recovered + timedelta(seconds=fallback.demote_after_seconds)
    if now >= demote_at:
        message = f"{health}, healthy since {stamp(recovered)}; traffic is back on the primary"
        verdict = Verdict(False, "PrimaryServing", message)
        return TierDecision("primary", TierClock(), idle_replicas, verdict, None)
    message = (
        f"{health} again since {stamp(recovered)}; traffic returns to it at {stamp(demote_at)}"
        " if it stays healthy"
    )
    verdict = Verdict(True, "DemotionPending", message)
    clock = TierClock(
        primary_unavailable_since=clock.primary_unavailable_since, primary_recovered_since=recovered
    )
    return TierDecision("fallback", clock, fallback.replicas, verdict, demote_at)


def _serving_fallback(
    fallback: FallbackSpec, fallback_ready: int, health: str, since: datetime
) -> TierDecision:
    message = (
        f"{health} since {stamp(since)}; the fallback serves with {fallback_ready} of"
        f" {fallback.replicas} pods ready"
    )
    verdict = Verdict(True, "PrimaryUnavailable", message)
    clock = TierClock(primary_unavailable_since=since)
    return TierDecision("fallback", clock, fallback.replicas, verdict, None)
