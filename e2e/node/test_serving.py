"""The sample LLMDeployment on a real node: the real worker behind real probes, real traffic
through the pod's address and the Service, a rolling update and a SIGTERM with streams in flight.
"""

from __future__ import annotations

import concurrent.futures
import threading
from datetime import datetime

import pytest
from pagoda_operator.workload import PRESTOP_SECONDS

from e2e.local_cluster import LocalCluster
from e2e.node.support import (
    SMALL,
    Traffic,
    Watch,
    apply_sample,
    call,
    pod_url,
    ready_pods,
    service_url,
    set_faults,
    stream_completion,
    wait_exit,
)
from e2e.operator_support import patch_spec, status, wait_condition

# The model is tiny and fast; a test that needs a stream in flight for a while slows each
# engine step (a test fault) so a few hundred tokens take tens of seconds, like a big model.
SLOW_STEP_S = 0.1


# Long enough for the slowed streams to finish while the worker drains.
LONG_DRAIN = {"startupTimeoutSeconds": 180, "terminationGracePeriodSeconds": 60}


def serving_sample(cluster: LocalCluster, namespace: str, **spec: object) -> tuple[str, dict]:
    """The sample with a long drain, applied and Ready: its name and its one pod."""
    name = apply_sample(cluster, namespace, serving=LONG_DRAIN, **spec)
    wait_condition(cluster, namespace, name, "Ready", "True", timeout=240)
    [pod] = ready_pods(cluster, namespace)
    return name, pod


def deletion(pod: dict, name: str) -> float | None:
    """When pod `name` was asked to go (its deletionTimestamp is that plus the grace period)."""
    meta = pod["metadata"]
    if meta["name"] != name or "deletionTimestamp" not in meta:
        return None
    deadline = datetime.fromisoformat(meta["deletionTimestamp"].replace("Z", "+00:00"))
    return deadline.timestamp() - meta["deletionGracePeriodSeconds"]


def worker_status(pod: dict) -> dict:
    return next(c for c in pod["status"]["containerStatuses"] if c["name"] == "worker")


@pytest.fixture
def pool() -> concurrent.futures.ThreadPoolExecutor:
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as executor:
        yield executor


def test_the_sample_serves_through_real_probes_and_the_service(
    cluster: LocalCluster, namespace: str, operator
) -> None:
    name = apply_sample(cluster, namespace)
    wait_condition(cluster, namespace, name, "Ready", "True", timeout=240)
    [pod] = ready_pods(cluster, namespace)
    worker = worker_status(pod)
    assert worker["started"] and worker["ready"] and worker["restartCount"] == 0
    assert call(f"{pod_url(pod)}/ready") == (200, {"ready": True})

    from_pod = stream_completion(pod_url(pod), max_tokens=24)
    assert from_pod.clean, from_pod
    assert len(from_pod.chunks) >= 12 and from_pod.finish_reason == "length"
    # Greedy, so the Service (kube-proxy's rules to the same pod) gives the same text.
    from_service = stream_completion(service_url(cluster, namespace, name), max_tokens=24)
    assert from_service.clean and from_service.text == from_pod.text
    assert status(cluster, namespace, name)["readyReplicas"] == 1


def test_a_rolling_update_drains_the_old_pod_and_fails_no_request(
    cluster: LocalCluster, namespace: str, operator, pool
) -> None:
    name, old = serving_sample(cluster, namespace, resources=SMALL, rollout={"minReadySeconds": 2})
    old_name = old["metadata"]["name"]
    set_faults(pod_url(old), step_delay_s=SLOW_STEP_S)

    with (
        Watch(cluster, namespace, "pods").running() as watch,
        Traffic(service_url(cluster, namespace, name)).running() as traffic,
    ):
        started = threading.Event()
        long = pool.submit(
            stream_completion, pod_url(old), max_tokens=400, timeout=180, started=started
        )
        assert started.wait(30), "the stream runs: the rollout starts under it"
        revision = status(cluster, namespace, name)["revisions"]["current"]
        patch_spec(cluster, namespace, name, {"engine": {"maxNumSeqs": 8}})
        cluster.wait_for(
            lambda: (
                not any(p["metadata"]["name"] == old_name for p in ready_pods(cluster, namespace))
                and status(cluster, namespace, name)["revisions"]["current"] != revision
            ),
            timeout=240,
            what="the new revision to replace the old pod",
        )
        stream = long.result(timeout=180)
        exited = wait_exit(watch, old_name, "worker", timeout=120)
        deleted = watch.wait(lambda pod: deletion(pod, old_name), 10, "the old pod's deletion")
    assert stream.clean and stream.finish_reason == "length", stream
    assert len(stream.chunks) >= 390, "the old pod finished the stream it had begun"
    # The drain was tested only if the stream outlived preStop and reached SIGTERM.
    assert stream.ended_at > deleted + PRESTOP_SECONDS, "the stream ended before SIGTERM"
    assert exited == 0
    assert traffic.results, "traffic ran during the rollout"
    new_ips = [pod["status"]["podIP"] for pod in ready_pods(cluster, namespace)]
    timeline = (
        f"old pod {old['status']['podIP']} deleted at {deleted:.1f}, its stream ended at "
        f"{stream.ended_at:.1f}; ready now: {new_ips}"
    )
    assert not traffic.failures(), f"{timeline}: {traffic.failures()[:3]}"
    wait_condition(cluster, namespace, name, "UpToDate", "True", timeout=60)


def test_sigterm_ends_every_stream_cleanly_refuses_new_ones_and_exits_0(
    cluster: LocalCluster, namespace: str, operator, pool
) -> None:
    _, pod = serving_sample(cluster, namespace)
    pod_name, url = pod["metadata"]["name"], pod_url(pod)
    set_faults(url, step_delay_s=SLOW_STEP_S / 2)
    started = [threading.Event() for _ in range(3)]
    streams = [
        pool.submit(stream_completion, url, max_tokens=200, started=event) for event in started
    ]
    assert all(event.wait(30) for event in started), "three streams in flight"

    with Watch(cluster, namespace, "pods").running() as watch:
        # As a kubelet, a node drain or `docker stop` would: SIGTERM to the container's PID 1.
        cluster.kubectl(
            "exec", pod_name, f"-n={namespace}", "-c=worker", "--", "sh", "-c", "kill -TERM 1"
        )
        refused = cluster.wait_for(
            lambda: (
                (found := stream_completion(url, max_tokens=4, timeout=10)).status == 503 and found
            ),
            timeout=20,
            what="new requests to be refused while draining",
        )
        results = [s.result(timeout=120) for s in streams]
        exited = wait_exit(watch, pod_name, "worker", timeout=60)
    assert "draining" in (refused.error or "") or "shutting down" in (refused.error or "")
    assert all(r.clean and r.finish_reason == "length" for r in results), results
    assert exited == 0
