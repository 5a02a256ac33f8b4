"""The glue around the pure plan: what gets written, in which order, and when nothing is."""

from __future__ import annotations

import asyncio

import pytest
from operator_world import T0, deployment, llmd
from pagoda_operator import runtime as runtime_module
from pagoda_operator.kube_client import ChildRejected, StatusConflict
from pagoda_operator.observed import World
from pagoda_operator.peering import PeeringGate
from pagoda_operator.reconciler import ChildrenRejected, reconcile
from pagoda_operator.rejection import Rejection
from pagoda_operator.runtime import Runtime


class FakeKubeClient:
    """Records calls; serves a world whose LLMDeployment keeps the last status written."""

    def __init__(self, resource: dict | None, conflict: bool = False, refuse: str = ""):
        self.resource = resource
        self.conflict = conflict
        self.refuse = refuse  # a kind the apiserver refuses
        self.calls: list[tuple[str, str]] = []

    def read_world(self, namespace, name):
        if self.resource is None:
            return None
        return World(self.resource, deployments={"primary": deployment(ready=0)}, now=T0)

    def apply(self, obj):
        if obj["kind"] == self.refuse:
            message = f'{obj["kind"]} "{obj["metadata"]["name"]}" is invalid: quantities must match'
            raise ChildRejected(Rejection(obj["kind"], obj["metadata"]["name"], message))
        self.calls.append(("apply", obj["kind"]))

    def delete(self, namespace, ref):
        self.calls.append(("delete", ref["kind"]))

    def write_status(self, resource, status):
        if self.conflict:
            raise StatusConflict("changed meanwhile")
        self.calls.append(("status", ""))
        self.resource = {**resource, "status": status}

    def post_event(self, resource, transition):
        self.calls.append(("event", transition.reason))


def test_first_pass_applies_writes_status_then_posts_events():
    kube = FakeKubeClient(llmd())
    reconcile(kube, "team", "demo")
    kinds = [what for call, what in kube.calls if call == "apply"]
    assert kinds == ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget"]
    status_at = kube.calls.index(("status", ""))
    assert all(i > status_at for i, (call, _) in enumerate(kube.calls) if call == "event")
    assert ("event", "RollingUpdate") in kube.calls


def test_second_pass_writes_no_status_and_posts_no_event():
    kube = FakeKubeClient(llmd())
    reconcile(kube, "team", "demo")
    kube.calls.clear()
    reconcile(kube, "team", "demo")
    assert [call for call, _ in kube.calls] == ["apply"] * 4


def test_a_status_conflict_posts_no_event():
    kube = FakeKubeClient(llmd(), conflict=True)
    with pytest.raises(StatusConflict):
        reconcile(kube, "team", "demo")
    assert not [call for call, _ in kube.calls if call == "event"]


def test_a_refused_child_is_reported_in_status_and_an_event_then_retried():
    kube = FakeKubeClient(llmd(), refuse="Deployment")
    with pytest.raises(ChildrenRejected, match="demo-primary"):
        reconcile(kube, "team", "demo")
    applied = [what for call, what in kube.calls if call == "apply"]
    assert applied == ["ConfigMap", "Service", "PodDisruptionBudget"], "the others still apply"
    ready = next(c for c in kube.resource["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "DeploymentRejected")
    assert "quantities must match" in ready["message"]
    assert ("event", "DeploymentRejected") in kube.calls
    # Retried: the same refusal writes nothing new and announces nothing again.
    kube.calls.clear()
    with pytest.raises(ChildrenRejected):
        reconcile(kube, "team", "demo")
    assert [call for call, _ in kube.calls if call != "apply"] == []


def test_deleted_or_deleting_objects_are_left_alone():
    assert reconcile(FakeKubeClient(None), "team", "demo") is None
    deleting = llmd()
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    kube = FakeKubeClient(deleting)
    assert reconcile(kube, "team", "demo") is None
    assert kube.calls == []


class Gate(PeeringGate):
    def __init__(self, active: bool):
        super().__init__(None, "me", 1)
        self._is_active = active

    def active(self) -> bool:
        return self._is_active


async def run_briefly(runtime: Runtime, *keys, seconds: float = 0.3) -> None:
    runtime.start()
    for key in keys:
        runtime.llmdeployment_changed(*key, deleted=False)
    await asyncio.sleep(seconds)
    await runtime.stop()


async def test_a_waiting_replica_reconciles_nothing(monkeypatch):
    seen = []
    monkeypatch.setattr(runtime_module, "reconcile", lambda kube, ns, name: seen.append(name))
    await run_briefly(Runtime(None, Gate(False), workers=2, resync_seconds=60), ("ns", "a"))
    assert seen == []


async def test_failures_are_retried_and_wake_ups_honoured(monkeypatch):
    seen = []

    def flaky(kube, ns, name):
        seen.append(name)
        if name == "broken" and seen.count("broken") == 1:
            raise RuntimeError("API hiccup")
        if name == "refused" and seen.count("refused") == 1:
            raise ChildrenRejected([Rejection("Deployment", "refused-primary", "invalid")])
        return 0.05 if name == "deadline" and seen.count("deadline") == 1 else None

    monkeypatch.setattr(runtime_module, "reconcile", flaky)
    monkeypatch.setattr(runtime_module.log, "exception", lambda *args: None)
    monkeypatch.setattr(runtime_module.log, "warning", lambda *args: None)
    runtime = Runtime(None, Gate(True), workers=2, resync_seconds=60)
    await run_briefly(runtime, ("ns", "broken"), ("ns", "refused"), ("ns", "deadline"), seconds=0.8)
    assert seen.count("broken") == 2, "retried 0.5 s after the first failure"
    assert seen.count("refused") == 2, "a refusal is retried with the same backoff"
    assert seen.count("deadline") == 2, "woken up at the deadline"


async def test_a_failing_peer_read_is_retried_and_the_workers_survive(monkeypatch):
    class FlakyGate(Gate):
        def __init__(self):
            super().__init__(True)
            self.reads = 0

        def active(self) -> bool:
            self.reads += 1
            if self.reads == 1:
                raise RuntimeError("apiserver unreachable")
            return True

    seen = []
    monkeypatch.setattr(runtime_module, "reconcile", lambda kube, ns, name: seen.append(name))
    monkeypatch.setattr(runtime_module.log, "exception", lambda *args: None)
    await run_briefly(Runtime(None, FlakyGate(), workers=1, resync_seconds=60), ("ns", "a"),
                      ("ns", "b"), seconds=0.8)  # fmt: skip
    # The key whose peer read failed is retried, and the one worker lives on for the other.
    assert sorted(seen) == ["a", "b"]
