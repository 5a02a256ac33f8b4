"""Pod problems, one row per signal the kubelet or scheduler reports."""

from __future__ import annotations

import pytest
from operator_world import T0, pod
from pagoda_operator.health import pod_crash, pod_problem, ready_since


@pytest.mark.parametrize(
    ("case", "observed", "reason", "says"),
    [
        ("ready", pod(), None, None),
        ("still loading the model", pod(ready=False, started=False), None, None),
        ("pending, not yet scheduled", pod(phase="Pending", ready=False, started=None), None, None),
        ("terminating", pod(ready=False, waiting="CrashLoopBackOff", deleting=True), None, None),
        (
            "no node has the GPUs",
            pod(phase="Pending", ready=False, unschedulable="0/2: Insufficient nvidia.com/gpu"),
            "Unschedulable",
            "Insufficient nvidia.com/gpu",
        ),
        (
            "its volume claim is not bound: no GPU hint",
            pod(phase="Pending", ready=False,
                unschedulable="0/2 nodes: pod has unbound immediate PersistentVolumeClaims"),
            "Unschedulable",
            "PersistentVolumeClaim of spec.model.source.pvc exists and is bound",
        ),
        (
            "crash loop",
            pod(ready=False, started=False, waiting="CrashLoopBackOff", last_terminated="Error",
                restarts=4),
            "CrashLoopBackOff",
            "keeps failing (4 restarts, exit code 1): see kubectl logs",
        ),
        (
            "crash loop, between two crashes: running again, not started yet",
            pod(ready=False, started=False, last_terminated="Error", restarts=4),
            "CrashLoopBackOff",
            "keeps failing (4 restarts, exit code 1): see kubectl logs",
        ),
        (
            "restarted once and started fine since, readiness failing: not a crash loop",
            pod(ready=False, last_terminated="Error", restarts=1),
            "ReadinessFailing",
            "GET /ready fails",
        ),
        (
            "OOM-killed",
            pod(ready=False, started=False, waiting="CrashLoopBackOff",
                last_terminated="OOMKilled", exit_code=137, restarts=2),
            "OOMKilled",
            "raise resources.memory",
        ),
        (
            "OOM-killed once, fine since",
            pod(ready=True, last_terminated="OOMKilled", exit_code=137, restarts=1),
            None,
            None,
        ),
        (
            "image cannot be pulled",
            pod(phase="Pending", ready=False, started=False, waiting="ImagePullBackOff"),
            "ImagePullBackOff",
            "check spec.image",
        ),
        (
            "ErrImagePull counts the same",
            pod(phase="Pending", ready=False, started=False, waiting="ErrImagePull"),
            "ImagePullBackOff",
            "cannot pull the image",
        ),
        (
            "a Secret is missing",
            pod(phase="Pending", ready=False, started=False, waiting="CreateContainerConfigError"),
            "ConfigError",
            "check the Secrets",
        ),
        ("readiness failing", pod(ready=False), "ReadinessFailing", "GET /ready fails"),
        ("readiness failing, no started field", pod(ready=False, started=None), "ReadinessFailing",
         "not ready"),
    ],
)  # fmt: skip
def test_pod_problem(case, observed, reason, says):
    problem = pod_problem(observed)
    if reason is None:
        assert problem is None, case
        return
    assert problem is not None, case
    assert problem.reason == reason, case
    assert problem.pod == "demo-primary-abc"
    assert "demo-primary-abc" in problem.message, "the message names the pod"
    assert says in problem.message, problem.message


def test_the_worst_container_problem_wins():
    observed = pod(ready=False, started=False, waiting="CrashLoopBackOff")
    observed["status"]["initContainerStatuses"] = [
        {"name": "fetch-model", "ready": False, "state": {"waiting": {"reason": "ErrImagePull"}}}
    ]
    assert pod_problem(observed).reason == "ImagePullBackOff"


def test_a_restart_is_a_crash_even_once_ready_again():
    assert pod_crash(pod()) is None
    crashed = pod_crash(pod(ready=True, last_terminated="OOMKilled", exit_code=137, restarts=1))
    assert crashed == (
        "container worker of pod demo-primary-abc restarted 1 time (last: OOMKilled, exit code 137)"
    )


@pytest.mark.parametrize(
    ("case", "observed", "since"),
    [
        ("ready", pod(ready_since=T0), T0),
        ("not ready", pod(ready=False, ready_since=T0), None),
        ("ready again after a restart: proves nothing",
         pod(ready_since=T0, last_terminated="Error", restarts=1), None),
        ("ready, but no transition time to count from", pod(), None),
    ],
)  # fmt: skip
def test_ready_since(case, observed, since):
    assert ready_since(observed) == since, case
