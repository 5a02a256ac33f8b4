"""A fallback whose pods no node could hold is known while the primary still serves."""

from __future__ import annotations

import pytest
from operator_world import T0, deployment, llmd, pod
from pagoda_operator.api.spec import FallbackSpec
from pagoda_operator.capacity import fallback_fit
from pagoda_operator.observed import World
from pagoda_operator.plan import plan


def node(name: str, gpus: int, unschedulable: bool = False, **labels: str) -> dict:
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"unschedulable": True} if unschedulable else {},
        "status": {"allocatable": {"nvidia.com/gpu": str(gpus), "cpu": "32"}},
    }


def fallback(gpus: int, replicas: int = 1, **selector: str) -> FallbackSpec:
    return FallbackSpec.model_validate({
        "model": {"source": {"hf": {"repo": "org/small"}}}, "replicas": replicas,
        "resources": {"gpus": gpus, "nodeSelector": selector},
    })  # fmt: skip


@pytest.mark.parametrize(
    ("case", "spec", "nodes", "fits"),
    [
        ("one node is big enough", fallback(4), [node("a", 4), node("b", 2)], True),
        ("no node is big enough", fallback(8), [node("a", 4), node("b", 4)], False),
        ("two pods, one per node", fallback(4, replicas=2), [node("a", 4), node("b", 4)], True),
        ("three pods, room for two", fallback(4, replicas=3), [node("a", 4), node("b", 6)],
         False),
        ("only the selected pool counts", fallback(4, pool="x"),
         [node("a", 8), node("b", 2, pool="x")], False),
        ("a cordoned node does not count", fallback(4), [node("a", 8, unschedulable=True)],
         False),
        ("a CPU fallback always fits", fallback(0), [], True),
    ],
)  # fmt: skip
def test_fallback_fit(case, spec, nodes, fits):
    assert (fallback_fit(spec, nodes) is None) is fits, case


def test_the_message_has_the_numbers():
    verdict = fallback_fit(fallback(8, replicas=1), [node("a", 4), node("b", 2)])
    assert verdict.reason == "FallbackWouldNotFit"
    assert "needs 1 pod x 8 GPUs" in verdict.message
    assert "the 2 nodes can hold 0 such pods (the largest offers 4" in verdict.message


def test_plan_reports_it_on_fallback_active_while_the_primary_serves():
    spec = {"model": {"source": {"hf": {"repo": "org/small"}}}, "resources": {"gpus": 8},
            "warm": False}  # fmt: skip
    resource = llmd(fallback=spec)
    world = World(
        resource,
        deployments={"primary": deployment(ready=2)},
        pods=[pod("p1"), pod("p2")],
        nodes=[node("a", 4)],
        now=T0,
    )
    result = plan(world)
    active = next(c for c in result.status["conditions"] if c["type"] == "FallbackActive")
    assert (active["status"], active["reason"]) == ("False", "FallbackWouldNotFit")
    assert any(t.reason == "FallbackWouldNotFit" and t.warning for t in result.transitions)
