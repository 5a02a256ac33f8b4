"""The fault helpers drive real pod status changes that controllers (and the operator) see."""

from __future__ import annotations

import pytest

from e2e.faults import FAULT_ANNOTATION, Fault
from e2e.local_cluster import LocalCluster


def running_pod(
    cluster: LocalCluster, namespace: str, name: str = "victim", **annotations: str
) -> str:
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "annotations": annotations},
            "spec": {"containers": [{"name": "worker", "image": "pagoda/worker:e2e"}]},
        },
        namespace=namespace,
    )
    return name


def condition(pod: dict, kind: str) -> str | None:
    return next(
        (c["status"] for c in pod["status"].get("conditions", []) if c["type"] == kind), None
    )


def container(pod: dict) -> dict:
    return pod["status"]["containerStatuses"][0]


def test_unready_pod_drops_out_of_its_deployment_and_recovers(
    cluster: LocalCluster, namespace: str
) -> None:
    cluster.kubectl("create", "deployment", "web", "--image=pagoda/worker:e2e", f"-n={namespace}")
    cluster.kubectl("rollout", "status", "deployment/web", f"-n={namespace}", "--timeout=60s")
    pod = cluster.get("pods", namespace=namespace)["items"][0]["metadata"]["name"]

    cluster.make_pod_unready(pod, namespace)

    cluster.wait_for(
        lambda: condition(cluster.get("pod", pod, namespace), "Ready") == "False", what="unready"
    )
    status = cluster.get("pod", pod, namespace)["status"]
    assert status["phase"] == "Running"
    assert "running" in status["containerStatuses"][0]["state"]
    cluster.wait_for(
        lambda: cluster.get("deployment", "web", namespace)["status"].get("readyReplicas", 0) == 0,
        what="the Deployment to count the pod unready",
    )

    cluster.clear_fault(pod, namespace)
    cluster.wait_pod_ready(pod, namespace)


def test_crash_loop_grows_the_restart_count(cluster: LocalCluster, namespace: str) -> None:
    pod = running_pod(cluster, namespace)
    cluster.wait_pod_ready(pod, namespace)

    cluster.make_pod_crash_loop(pod, namespace)

    crashed = cluster.wait_for(
        lambda: (
            (p := cluster.get("pod", pod, namespace)) and container(p)["restartCount"] >= 2 and p
        ),
        what="two restarts",
    )
    status = container(crashed)
    assert condition(crashed, "Ready") == "False"
    assert crashed["status"]["phase"] == "Running"
    assert status["state"] == {
        "waiting": {
            "reason": "CrashLoopBackOff",
            "message": "back-off restarting failed container worker",
        }
    }
    assert status["lastState"]["terminated"]["reason"] == "Error"
    assert status["lastState"]["terminated"]["exitCode"] == 1


def test_oom_killed_pod_reports_oomkilled_and_exit_137(
    cluster: LocalCluster, namespace: str
) -> None:
    pod = running_pod(cluster, namespace)
    cluster.wait_pod_ready(pod, namespace)

    cluster.make_pod_oom_killed(pod, namespace)

    killed = cluster.wait_for(
        lambda: (
            (p := cluster.get("pod", pod, namespace)) and container(p)["restartCount"] >= 1 and p
        ),
        what="an OOM kill",
    )
    terminated = container(killed)["lastState"]["terminated"]
    assert (terminated["reason"], terminated["exitCode"]) == ("OOMKilled", 137)


def test_switching_faults_clears_the_first(cluster: LocalCluster, namespace: str) -> None:
    pod = running_pod(cluster, namespace)
    cluster.wait_pod_ready(pod, namespace)
    cluster.make_pod_crash_loop(pod, namespace)
    cluster.wait_for(lambda: container(cluster.get("pod", pod, namespace))["restartCount"] >= 1)

    cluster.make_pod_oom_killed(pod, namespace)

    cluster.wait_for(
        lambda: (
            container(cluster.get("pod", pod, namespace))["lastState"]["terminated"]["reason"]
            == "OOMKilled"
        ),
        what="the OOM kill after the crash loop",
    )


def test_image_pull_failure_on_a_running_pod(cluster: LocalCluster, namespace: str) -> None:
    pod = running_pod(cluster, namespace)
    cluster.wait_pod_ready(pod, namespace)

    cluster.make_pod_image_pull_fail(pod, namespace)

    failed = cluster.wait_for(
        lambda: (
            (p := cluster.get("pod", pod, namespace)) and "waiting" in container(p)["state"] and p
        ),
        what="ImagePullBackOff",
    )
    assert container(failed)["state"]["waiting"]["reason"] == "ImagePullBackOff"
    assert condition(failed, "Ready") == "False"


def test_a_pod_created_with_an_image_pull_fault_never_starts(
    cluster: LocalCluster, namespace: str
) -> None:
    pod = running_pod(cluster, namespace, **{FAULT_ANNOTATION: str(Fault.IMAGE_PULL_ERROR)})

    pending = cluster.wait_for(
        lambda: (
            (p := cluster.get("pod", pod, namespace)) and p["status"].get("containerStatuses") and p
        ),
        what="container statuses",
    )
    assert pending["status"]["phase"] == "Pending"
    assert container(pending)["state"]["waiting"]["reason"] == "ImagePullBackOff"

    cluster.clear_fault(pod, namespace)
    cluster.wait_pod_ready(pod, namespace)


def test_unknown_fault_is_refused_before_touching_the_pod(
    cluster: LocalCluster, namespace: str
) -> None:
    pod = running_pod(cluster, namespace)
    with pytest.raises(ValueError, match="meteor-strike"):
        cluster.inject_fault(pod, namespace, "meteor-strike")
    annotations = cluster.get("pod", pod, namespace)["metadata"].get("annotations") or {}
    assert FAULT_ANNOTATION not in annotations
