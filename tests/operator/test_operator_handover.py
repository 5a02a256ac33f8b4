"""While a cold GPU fallback takes over, crash-looping primary pods give their GPUs back."""

from __future__ import annotations

from datetime import timedelta

import pytest
from operator_world import T0, deployment, pod
from pagoda_operator.api.spec import FallbackSpec
from pagoda_operator.api.status import TierClock
from pagoda_operator.handover import decide_primary_scale
from pagoda_operator.observed import DeploymentState
from pagoda_operator.tiers import decide_tier

CRASHING = pod("p1", ready=False, started=False, waiting="CrashLoopBackOff",
               last_terminated="Error", restarts=3)  # fmt: skip
OOM = pod("p2", ready=False, started=False, waiting="CrashLoopBackOff",
          last_terminated="OOMKilled", restarts=3)  # fmt: skip
UNREADY = pod("p3", ready=False, started=False)


def fallback(warm: bool = False, gpus: int = 1) -> FallbackSpec:
    return FallbackSpec.model_validate({
        "model": {"source": {"hf": {"repo": "org/small"}}},
        "warm": warm, "resources": {"gpus": gpus}, "promoteAfterSeconds": 1,
        "demoteAfterSeconds": 1,
    })  # fmt: skip


def taking_over(spec: FallbackSpec):
    clock = TierClock(primary_unavailable_since=T0)
    return decide_tier(spec, 0, 0, "primary", clock, T0 + timedelta(seconds=1))


def deployed(wanted: int, revision: str = "r1") -> DeploymentState:
    return DeploymentState.from_object(deployment(revision=revision, wanted=wanted, ready=0))


@pytest.mark.parametrize(
    ("case", "spec", "pods", "running", "replicas"),
    [
        ("cold GPU fallback starting: crash-looping pods go", fallback(), [CRASHING, OOM],
         deployed(2), 0),
        ("pods that are only unready keep their place", fallback(), [CRASHING, UNREADY],
         deployed(2), 1),
        ("stays down once they are gone", fallback(), [], deployed(0), 0),
        ("a new primary revision gets all its replicas", fallback(), [], deployed(0, "r0"), 2),
        ("a warm fallback already has its GPUs", fallback(warm=True), [CRASHING, OOM],
         deployed(2), 2),
        ("a CPU fallback needs no GPUs", fallback(gpus=0), [CRASHING, OOM], deployed(2), 2),
    ],
)  # fmt: skip
def test_decide_primary_scale(case, spec, pods, running, replicas):
    scale = decide_primary_scale(2, spec, taking_over(spec), pods, running, "r1")
    assert scale.replicas == replicas, case
    assert bool(scale.note) == (replicas < 2), case


def test_nothing_is_scaled_before_the_promotion_or_once_the_primary_is_back():
    spec = fallback()
    waiting = decide_tier(spec, 0, 0, "primary", TierClock(), T0)
    assert waiting.verdict.reason == "PromotionPending"
    assert decide_primary_scale(2, spec, waiting, [CRASHING, OOM], deployed(2), "r1").replicas == 2
    back = decide_tier(spec, 2, 1, "fallback", TierClock(primary_unavailable_since=T0), T0)
    assert back.verdict.reason == "DemotionPending"
    assert decide_primary_scale(2, spec, back, [], deployed(0), "r1").replicas == 2


def test_the_note_says_what_happened():
    spec = fallback()
    scale = decide_primary_scale(2, spec, taking_over(spec), [CRASHING, OOM], deployed(2), "r1")
    assert "scaled to 0 of 2 pods" in scale.note and "free their GPUs" in scale.note
