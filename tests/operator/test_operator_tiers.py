"""Fallback promotion and demotion: who serves, from the primary's ready count over time."""

from __future__ import annotations

from datetime import timedelta

import pytest
from operator_world import T0
from pagoda_operator.api.spec import FallbackSpec
from pagoda_operator.api.status import TierClock
from pagoda_operator.tiers import decide_tier

PROMOTE, DEMOTE = 30, 120


def fallback(warm: bool = True) -> FallbackSpec:
    return FallbackSpec.model_validate(
        {
            "model": {"source": {"hf": {"repo": "org/small"}}},
            "replicas": 2,
            "warm": warm,
            "promoteAfterSeconds": PROMOTE,
            "demoteAfterSeconds": DEMOTE,
            "minPrimaryReady": 1,
        }
    )


def at(seconds: float):
    return T0 + timedelta(seconds=seconds)


DOWN = TierClock(primary_unavailable_since=T0)  # primary down since 0 s
BACK = TierClock(primary_unavailable_since=T0, primary_recovered_since=at(100))  # up since 100 s


@pytest.mark.parametrize(
    ("case", "warm", "primary_ready", "fallback_ready", "active", "clock", "now",
     "want_active", "want_replicas", "want_reason", "want_wake"),
    [
        ("healthy primary serves, warm fallback idles ready",
         True, 2, 2, "primary", TierClock(), at(0), "primary", 2, "PrimaryServing", None),
        ("healthy primary, cold fallback stays at zero",
         False, 2, 0, "primary", TierClock(), at(0), "primary", 0, "PrimaryServing", None),
        ("primary just failed: the promotion clock starts",
         True, 0, 2, "primary", TierClock(), at(0), "primary", 2, "PromotionPending", at(PROMOTE)),
        ("still within promoteAfterSeconds",
         True, 0, 2, "primary", DOWN, at(29), "primary", 2, "PromotionPending", at(PROMOTE)),
        ("promoteAfterSeconds passed, warm fallback ready: promote",
         True, 0, 2, "primary", DOWN, at(30), "fallback", 2, "PrimaryUnavailable", None),
        ("promoteAfterSeconds passed, cold fallback: scale it up first",
         False, 0, 0, "primary", DOWN, at(30), "primary", 2, "FallbackStarting", None),
        ("cold fallback became ready: promote",
         False, 0, 1, "primary", DOWN, at(45), "fallback", 2, "PrimaryUnavailable", None),
        ("primary recovered before the deadline: the clock resets",
         True, 1, 2, "primary", DOWN, at(20), "primary", 2, "PrimaryServing", None),
        ("fallback serves while the primary is down",
         True, 0, 2, "fallback", DOWN, at(90), "fallback", 2, "PrimaryUnavailable", None),
        ("primary back: the demotion clock starts",
         True, 2, 2, "fallback", DOWN, at(100), "fallback", 2, "DemotionPending",
         at(100 + DEMOTE)),
        ("healthy, but not for demoteAfterSeconds yet",
         True, 2, 2, "fallback", BACK, at(219), "fallback", 2, "DemotionPending",
         at(100 + DEMOTE)),
        ("primary dipped during the demotion window: the window restarts later",
         True, 0, 2, "fallback", BACK, at(150), "fallback", 2, "PrimaryUnavailable", None),
        ("healthy for demoteAfterSeconds: traffic goes back",
         True, 2, 2, "fallback", BACK, at(220), "primary", 2, "PrimaryServing", None),
        ("demoted cold fallback scales back to zero",
         False, 2, 2, "fallback", BACK, at(220), "primary", 0, "PrimaryServing", None),
    ],
)  # fmt: skip
def test_decide_tier(case, warm, primary_ready, fallback_ready, active, clock, now,
                     want_active, want_replicas, want_reason, want_wake):  # fmt: skip
    decision = decide_tier(fallback(warm), primary_ready, fallback_ready, active, clock, now)
    assert decision.active == want_active, case
    assert decision.fallback_replicas == want_replicas, case
    assert decision.verdict.reason == want_reason, case
    assert decision.verdict.status == (want_active == "fallback"), case
    assert decision.wake_at == want_wake, case


def test_flapping_primary_never_moves_traffic_back():
    """Primary up 60 s, down 10 s, repeatedly: with demoteAfterSeconds 120 it never returns."""
    spec, clock, active = fallback(), DOWN, "fallback"
    for second in range(30, 1000, 5):
        up = (second // 10) % 7 != 0  # down one 10 s slot in every 70 s
        decision = decide_tier(spec, 2 if up else 0, 2, active, clock, at(second))
        clock, active = decision.clock, decision.active
        assert active == "fallback", f"moved back at {second}s"


def test_no_fallback_configured():
    decision = decide_tier(None, 0, 0, "primary", TierClock(), T0)
    assert (decision.active, decision.fallback_replicas) == ("primary", 0)
    assert decision.verdict.reason == "NoFallback"
    assert decision.wake_at is None


def test_messages_say_when_and_why():
    decision = decide_tier(fallback(), 0, 2, "primary", DOWN, at(10))
    assert "primary has 0 ready pods" in decision.verdict.message
    assert "2026-01-01T12:00:30Z" in decision.verdict.message  # the promotion time
    again = decide_tier(fallback(), 0, 2, "primary", decision.clock, at(11))
    assert again.verdict == decision.verdict, "a recomputed message must not change"


@pytest.mark.parametrize(
    ("warm", "says"),
    [(False, "starting the cold fallback"), (True, "the warm fallback has no ready pod yet")],
)
def test_a_fallback_without_ready_pods_is_described_as_it_is(warm, says):
    decision = decide_tier(fallback(warm), 0, 0, "primary", DOWN, at(PROMOTE))
    assert decision.verdict.reason == "FallbackStarting"
    assert says in decision.verdict.message
