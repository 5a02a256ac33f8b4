"""What a failed container said reaches status: pods shaped as a real kubelet reports them, with
the log tail it copies into lastState.terminated.message (terminationMessagePolicy
FallbackToLogsOnError)."""

from __future__ import annotations

from operator_world import PVC_SOURCE, T0, deployment, llmd
from pagoda_operator.api.spec import LLMDeploymentSpec
from pagoda_operator.health import QUOTED_CHARS, pod_crash, pod_problem
from pagoda_operator.naming import Owner
from pagoda_operator.observed import World
from pagoda_operator.plan import plan
from pagoda_operator.records import READY_AT
from pagoda_operator.revision import primary_config
from pagoda_operator.workload import engine_config_map

POD = "demo-primary-7d9f8-x2xkq"
URL = "http://models.team.svc/stories.tar"
CURL_LOG = (
    "curl: (22) The requested URL returned error: 404\n"
    f"fetch-model: downloading {URL} failed (curl exit code 22)\n"
)
WORKER_LOG = (
    "[   0.0s] probes answer on http://0.0.0.0:8000/health and http://0.0.0.0:8000/ready\n"
    "[   0.0s] loading /models/model\n"
    "pagoda serve: /models/model/model.safetensors is not a readable safetensors file: Error"
    " while deserializing header: incomplete metadata, file not fully covered\n"
)


def terminated(exit_code: int, message: str, reason: str = "Error") -> dict:
    return {
        "terminated": {
            "exitCode": exit_code,
            "reason": reason,
            "message": message,
            "startedAt": "2026-01-01T11:59:58Z",
            "finishedAt": "2026-01-01T11:59:59Z",
            "containerID": "containerd://4f1c",
        }
    }


def fetch_model(state: dict, restarts: int, last: dict | None = None, started=False) -> dict:
    status = {
        "name": "fetch-model",
        "image": "pagoda-worker:0.1.0",
        "imageID": "sha256:9a1b",
        "ready": False,
        "restartCount": restarts,
        "started": started,
        "state": state,
        "lastState": last or {},
    }
    if "terminated" in state and state["terminated"]["exitCode"] == 0:
        status["ready"] = True
    return status


def worker(state: dict, restarts: int = 0, last: dict | None = None, ready=False) -> dict:
    return {
        "name": "worker",
        "image": "pagoda-worker:0.1.0",
        "imageID": "sha256:9a1b",
        "ready": ready,
        "restartCount": restarts,
        "started": ready,
        "state": state,
        "lastState": last or {},
    }


def kubelet_pod(init: dict, main: dict, phase: str = "Pending") -> dict:
    initialized = init.get("ready", False)
    return {
        "metadata": {
            "name": POD,
            "namespace": "team",
            "labels": {"pagoda.dev/deployment": "demo", "pagoda.dev/tier": "primary"},
        },
        "spec": {"containers": [{"name": "worker", "resources": {}}]},
        "status": {
            "phase": phase,
            "conditions": [
                {"type": "PodReadyToStartContainers", "status": "True"},
                {"type": "Initialized", "status": str(initialized),
                 "reason": None if initialized else "ContainersNotInitialized"},
                {"type": "Ready", "status": str(main["ready"]), "reason": "ContainersNotReady"},
                {"type": "ContainersReady", "status": str(main["ready"])},
                {"type": "PodScheduled", "status": "True"},
            ],
            "hostIP": "10.244.0.1",
            "podIP": "10.244.0.7",
            "initContainerStatuses": [init],
            "containerStatuses": [main],
        },
    }  # fmt: skip


INITIALIZING = {"waiting": {"reason": "PodInitializing"}}
BACK_OFF = {
    "waiting": {
        "reason": "CrashLoopBackOff",
        "message": f"back-off 40s restarting failed container=fetch-model pod={POD}_team(uid-1)",
    }
}
RUNNING = {"running": {"startedAt": "2026-01-01T12:00:00Z"}}


def test_a_crash_looping_download_names_the_url_that_failed():
    pod = kubelet_pod(fetch_model(BACK_OFF, 3, terminated(22, CURL_LOG)), worker(INITIALIZING))
    problem = pod_problem(pod)
    assert problem.reason == "CrashLoopBackOff"
    assert problem.message == (
        f"init container fetch-model of pod {POD} keeps failing (3 restarts, exit code 22):"
        f" curl: (22) The requested URL returned error: 404 | fetch-model: downloading {URL}"
        " failed (curl exit code 22)"
    )


def test_a_download_running_again_after_a_failure_still_counts_as_failing():
    """An init container has no startup probe: `started` turns true as soon as it runs."""
    init = fetch_model(RUNNING, 1, terminated(22, CURL_LOG), started=True)
    problem = pod_problem(kubelet_pod(init, worker(INITIALIZING)))
    assert problem.reason == "CrashLoopBackOff"
    assert "keeps failing (1 restart, exit code 22)" in problem.message
    assert URL in problem.message


def test_a_first_failure_before_any_restart_is_reported():
    checksum = f"fetch-model: checksum of {URL} did not match: expected {'a' * 64}, got {'b' * 64}"
    init = fetch_model(terminated(1, checksum + "\n"), 0)
    problem = pod_problem(kubelet_pod(init, worker(INITIALIZING)))
    assert problem.reason == "CrashLoopBackOff"
    assert problem.message == (
        f"init container fetch-model of pod {POD} failed (exit code 1): {checksum}"
    )


def test_a_download_that_succeeded_after_a_retry_is_no_problem():
    init = fetch_model(terminated(0, "", "Completed"), 1, terminated(22, CURL_LOG))
    pod = kubelet_pod(init, worker(RUNNING, ready=True), phase="Running")
    assert pod_problem(pod) is None


def test_a_worker_that_cannot_load_its_model_quotes_its_last_lines():
    done = fetch_model(terminated(0, "", "Completed"), 0)
    crashing = worker(
        {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s restarting"}},
        restarts=2,
        last=terminated(1, WORKER_LOG),
    )
    problem = pod_problem(kubelet_pod(done, crashing, phase="Running"))
    assert problem.reason == "CrashLoopBackOff"
    assert problem.message == (
        f"container worker of pod {POD} keeps failing (2 restarts, exit code 1): [   0.0s] loading"
        " /models/model | pagoda serve: /models/model/model.safetensors is not a readable"
        " safetensors file: Error while deserializing header: incomplete metadata, file not"
        " fully covered"
    )


def test_a_long_log_tail_is_bounded_and_keeps_its_end():
    done = fetch_model(terminated(0, "", "Completed"), 0)
    log = "Traceback (most recent call last):\n" + "x" * 5000 + "\nRuntimeError: the end\n\n"
    crashing = worker(BACK_OFF, restarts=5, last=terminated(1, log))
    message = pod_problem(kubelet_pod(done, crashing, phase="Running")).message
    quoted = message.split("exit code 1): ", 1)[1]
    assert len(quoted) == QUOTED_CHARS
    assert quoted.startswith("…") and quoted.endswith("RuntimeError: the end")


def test_no_termination_message_points_to_the_logs():
    init = fetch_model(BACK_OFF, 2, terminated(22, ""))
    message = pod_problem(kubelet_pod(init, worker(INITIALIZING))).message
    assert message.endswith(f"see kubectl logs {POD} -c fetch-model --previous")


def test_a_restarted_download_is_a_crash_with_its_words():
    pod = kubelet_pod(fetch_model(BACK_OFF, 2, terminated(22, CURL_LOG)), worker(INITIALIZING))
    assert pod_crash(pod) == (
        f"init container fetch-model of pod {POD} restarted 2 times (last: Error, exit code 22):"
        f" curl: (22) The requested URL returned error: 404 | fetch-model: downloading {URL}"
        " failed (curl exit code 22)"
    )


def uri_world(config_maps: list[dict] | None = None) -> tuple[World, dict]:
    """A revision downloading from URL, whose one pod's fetch-model keeps failing."""
    resource = llmd(model={"name": "stories", "source": {"uri": URL}}, replicas=1)
    revision = primary_config(LLMDeploymentSpec.model_validate(resource["spec"])).revision
    pod = kubelet_pod(fetch_model(BACK_OFF, 3, terminated(22, CURL_LOG)), worker(INITIALIZING))
    pod["metadata"]["labels"]["pagoda.dev/revision"] = revision
    world = World(
        resource,
        deployments={"primary": deployment(revision=revision, wanted=1, ready=0)},
        pods=[pod],
        config_maps=config_maps or [],
        now=T0,
    )
    return world, pod


def condition(status: dict, kind: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == kind)


def test_degraded_quotes_the_failing_container():
    world, pod = uri_world()
    degraded = condition(plan(world).status, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "CrashLoopBackOff")
    assert degraded["message"] == f"[primary] {pod_problem(pod).message}"
    assert "The requested URL returned error: 404" in degraded["message"]


def test_a_new_revision_whose_download_keeps_failing_is_rolled_back_at_once():
    ready = LLMDeploymentSpec.model_validate({"model": {"name": "old", "source": PVC_SOURCE}})
    owner = Owner("team", "demo", "uid-1")
    old = engine_config_map(owner, primary_config(ready), {READY_AT: "2025-12-31T00:00:00Z"})
    world, _ = uri_world(config_maps=[old])
    rolled_back = condition(plan(world).status, "RolledBack")
    assert (rolled_back["status"], rolled_back["reason"]) == ("True", "CrashedDuringRollout")
    assert f"fetch-model: downloading {URL} failed" in rolled_back["message"]
