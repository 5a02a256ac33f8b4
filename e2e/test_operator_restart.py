"""The operator process comes and goes: restarts mid-rollout, and two replicas with peering."""

from __future__ import annotations

import json
import socket
import time

import pytest

from e2e.faults import FAULT_ANNOTATION, Fault
from e2e.operator_support import (
    Operator,
    condition,
    events,
    install_crds,
    llmdeployment,
    models_volume,
    pods,
    ready,
    remove_crds,
    status,
    wait_condition,
)

BROKEN = {FAULT_ANNOTATION: str(Fault.IMAGE_PULL_ERROR)}  # pods that never become ready


@pytest.fixture(scope="module", autouse=True)
def crds(cluster):
    install_crds(cluster)
    yield
    remove_crds(cluster)


def patch(cluster, namespace: str, name: str, spec: dict) -> None:
    body = json.dumps({"spec": spec})
    cluster.kubectl("patch", f"llmd/{name}", f"-n={namespace}", "--type=merge", f"-p={body}")


def template_revision(cluster, namespace: str, name: str) -> str:
    found = cluster.get("deployment", f"{name}-primary", namespace)
    return found["spec"]["template"]["metadata"]["labels"]["pagoda.dev/revision"]


def test_operator_killed_mid_rollout_finishes_the_latest_spec(cluster, namespace, tmp_path):
    models_volume(cluster, namespace)
    rollout = {"maxSurge": 1, "maxUnavailable": 0, "progressDeadlineSeconds": 600}
    first = Operator(cluster, tmp_path, "--standalone").start()
    cluster.apply(llmdeployment("mid", replicas=3, rollout=rollout), namespace=namespace)
    wait_condition(cluster, namespace, "mid", "Progressing", "False", "RolloutComplete")
    v1 = status(cluster, namespace, "mid")["revisions"]["current"]

    # A rollout that cannot finish on its own: its first surge pod never becomes ready.
    patch(cluster, namespace, "mid", {"model": {"name": "v2"}, "podAnnotations": BROKEN})
    v2 = cluster.wait_for(
        lambda: (current := status(cluster, namespace, "mid")["revisions"]["current"]) != v1
        and current,
        what="the operator to start rolling out v2",
    )  # fmt: skip
    wait_condition(cluster, namespace, "mid", "Progressing", "True", "RollingUpdate")
    first.stop(crash=True)

    # While no operator runs, the user fixes the spec; nothing reacts yet.
    patch(cluster, namespace, "mid", {"model": {"name": "v3"}, "podAnnotations": None})
    time.sleep(2)
    assert template_revision(cluster, namespace, "mid") == v2

    second = Operator(cluster, tmp_path, "--standalone").start()
    try:
        final = cluster.wait_for(
            lambda: (revisions := status(cluster, namespace, "mid")["revisions"])["lastReady"]
            not in (v1, v2) and revisions,
            timeout=90,
            what="the rollout of v3 to complete after the restart",
        )  # fmt: skip
        v3 = final["current"]
        assert final["desired"] == v3 and final.get("rolledBackFrom") is None
        wait_condition(cluster, namespace, "mid", "Progressing", "False", "RolloutComplete")
        wait_condition(cluster, namespace, "mid", "Ready", "True")
        generation = cluster.get("llmdeployment", "mid", namespace)["metadata"]["generation"]
        assert status(cluster, namespace, "mid")["observedGeneration"] == generation
        cluster.wait_for(
            lambda: (found := pods(cluster, namespace)) and len(found) == 3 and all(
                ready(p) and p["metadata"]["labels"]["pagoda.dev/revision"] == v3 for p in found
            ),
            what="three ready v3 pods and nothing else",
        )  # fmt: skip
        config_maps = cluster.kubectl(
            "get", "configmaps", f"-n={namespace}", "-l=pagoda.dev/deployment=mid", "-o=name"
        ).stdout.split()
        assert config_maps == [f"configmap/mid-primary-{v3}"]
    finally:
        second.stop()


def test_rollback_decided_after_a_restart(cluster, namespace, tmp_path):
    models_volume(cluster, namespace)
    rollout = {"maxSurge": 1, "maxUnavailable": 0, "progressDeadlineSeconds": 5}
    first = Operator(cluster, tmp_path, "--standalone").start()
    cluster.apply(llmdeployment("late", replicas=2, rollout=rollout), namespace=namespace)
    wait_condition(cluster, namespace, "late", "Progressing", "False", "RolloutComplete")
    good = status(cluster, namespace, "late")["revisions"]["current"]
    patch(cluster, namespace, "late", {"model": {"name": "bad"}, "podAnnotations": BROKEN})
    bad = cluster.wait_for(lambda: template_revision(cluster, namespace, "late") != good
                           and template_revision(cluster, namespace, "late"))  # fmt: skip
    first.stop(crash=True)

    # The deadline passes while no operator runs.
    def deadline_exceeded():
        found = cluster.get("deployment", "late-primary", namespace)["status"]
        progressing = [c for c in found.get("conditions", []) if c["type"] == "Progressing"]
        return progressing and progressing[0]["reason"] == "ProgressDeadlineExceeded"

    cluster.wait_for(deadline_exceeded, timeout=60, what="the Deployment to miss its deadline")
    assert condition(cluster, namespace, "late", "RolledBack")["status"] == "False"

    second = Operator(cluster, tmp_path, "--standalone").start()
    try:
        wait_condition(cluster, namespace, "late", "RolledBack", "True", timeout=30)
        assert status(cluster, namespace, "late")["revisions"]["rolledBackFrom"] == bad
        assert template_revision(cluster, namespace, "late") == good
    finally:
        second.stop()


def test_two_replicas_one_works_and_the_other_takes_over(cluster, namespace, tmp_path):
    models_volume(cluster, namespace)
    peering = f"peers-{namespace}"
    high = Operator(cluster, tmp_path, f"--peering={peering}", "--priority=20").start()
    low = Operator(cluster, tmp_path, f"--peering={peering}", "--priority=10").start()
    identity = {op: f"{socket.gethostname()}-{op.process.pid}" for op in (low, high)}
    try:
        peers = cluster.wait_for(
            lambda: len(found := cluster.get("clusterkopfpeering", peering).get("status") or {})
            == 2 and found,
            what="both replicas in the peering object",
        )  # fmt: skip
        assert set(peers) == set(identity.values())
        cluster.wait_for(lambda: high.healthy() == {"active": True}, what="high to work")
        cluster.wait_for(lambda: low.healthy() == {"active": False}, what="low to wait")

        cluster.apply(llmdeployment("peered", replicas=1), namespace=namespace)
        wait_condition(cluster, namespace, "peered", "Ready", "True")
        reporters = {e.get("reportingInstance") for e in events(cluster, namespace, "peered")}
        assert reporters == {identity[high]}
        assert low.metric("pagoda_operator_reconciles_total", outcome="ok") == 0, "it waits"

        high.stop()  # graceful: it leaves the peering, the other resumes at once
        cluster.wait_for(lambda: low.healthy() == {"active": True}, what="low to take over")
        cluster.kubectl("scale", "llmd/peered", "--replicas=2", f"-n={namespace}")  # subresource
        cluster.wait_for(
            lambda: status(cluster, namespace, "peered").get("readyReplicas") == 2,
            what="the remaining replica to reconcile the change",
        )
        assert low.metric("pagoda_operator_reconciles_total", outcome="ok") > 0
    finally:
        low.stop()
        high.stop()
        cluster.kubectl("delete", "clusterkopfpeering", peering, "--ignore-not-found")
