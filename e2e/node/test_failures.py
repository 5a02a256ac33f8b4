"""Real workers failing for real: a broken model crash-loops and is rolled back while the last
ready revision serves; a wedged engine fails readiness and the fallback tier takes over."""

from __future__ import annotations

import shutil

from e2e.kube import Cluster
from e2e.node.support import (
    Traffic,
    call,
    models_volume,
    pod_url,
    ready_endpoints,
    ready_pods,
    service_url,
    set_faults,
    stream_completion,
)
from e2e.node.test_serving import SMALL, apply_sample
from e2e.test_operator_support import (
    condition,
    patch_spec,
    pods,
    ready,
    status,
    wait_condition,
)

STORIES_PVC = {"pvc": {"claimName": "pagoda-models", "path": "stories260K"}}


def last_log_line(cluster: Cluster, namespace: str, pod: str) -> str:
    logs = cluster.kubectl("logs", pod, f"-n={namespace}", "-c=worker", "--previous").stdout
    return [line for line in logs.splitlines() if line.strip()][-1].strip()


def test_a_broken_model_is_reported_and_rolled_back_while_the_last_ready_revision_serves(
    cluster: Cluster, namespace: str, operator
) -> None:
    folder = models_volume(cluster, namespace)
    corrupt = folder / "corrupt"
    shutil.copytree(folder / "stories260K", corrupt)
    weights = corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    name = apply_sample(cluster, namespace, resources=SMALL, rollout={"minReadySeconds": 2})
    wait_condition(cluster, namespace, name, "Ready", "True", timeout=240)
    good = status(cluster, namespace, name)["revisions"]["current"]
    [serving] = ready_pods(cluster, namespace)

    with Traffic(service_url(cluster, namespace, name)).running() as traffic:
        for path in ("missing", "corrupt"):
            source = {"pvc": {"claimName": "pagoda-models", "path": path}}
            patch_spec(cluster, namespace, name, {"model": {"source": source}})
            bad = cluster.wait_for(
                lambda: [
                    p["metadata"]["name"]
                    for p in pods(cluster, namespace)
                    if p["metadata"]["labels"]["pagoda.dev/revision"] != good
                ],
                timeout=60,
                what=f"a pod of the revision with model path {path!r}",
            )[0]
            rolled_back = wait_condition(
                cluster, namespace, name, "RolledBack", "True", "CrashedDuringRollout", timeout=180
            )
            assert bad in rolled_back["message"], rolled_back
            revisions = status(cluster, namespace, name)["revisions"]
            assert revisions["lastReady"] == good and revisions["rolledBackFrom"] != good
            # The worker's own last words reached the status, naming the pod.
            said = last_log_line(cluster, namespace, bad)
            assert f"/models/{path}" in said or "safetensors" in said.lower(), said
            reported = [
                condition(cluster, namespace, name, kind).get("message", "")
                for kind in ("Degraded", "RolledBack")
            ]
            assert any(said[:80] in message for message in reported), (said, reported)
            cluster.wait_for(
                lambda: (
                    [p["metadata"]["name"] for p in pods(cluster, namespace)]
                    == [serving["metadata"]["name"]]
                ),
                timeout=120,
                what="only the last ready revision's pod",
            )
    assert ready_pods(cluster, namespace)[0]["metadata"]["name"] == serving["metadata"]["name"]
    assert traffic.results and not traffic.failures(), traffic.failures()[:3]


def test_a_wedged_engine_fails_readiness_and_the_fallback_serves_until_it_recovers(
    cluster: Cluster, namespace: str, operator
) -> None:
    fallback = {
        "model": {"source": STORIES_PVC},
        "replicas": 1,
        "warm": True,
        "resources": SMALL,
        "promoteAfterSeconds": 5,
        "demoteAfterSeconds": 10,
    }
    name = apply_sample(cluster, namespace, resources=SMALL, fallback=fallback)
    wait_condition(cluster, namespace, name, "Ready", "True", timeout=240)
    wait_condition(cluster, namespace, name, "FallbackActive", "False", "PrimaryServing")
    [primary] = ready_pods(cluster, namespace, "primary")
    cluster.wait_for(lambda: ready_pods(cluster, namespace, "fallback"), timeout=240,
                     what="the warm fallback to be ready")  # fmt: skip
    [spare] = ready_pods(cluster, namespace, "fallback")
    url, service = pod_url(primary), service_url(cluster, namespace, name)
    assert ready_endpoints(cluster, namespace, name) == {primary["status"]["podIP"]}

    set_faults(url, wedge=True)
    # The engine loop goes round but yields no token: the canary goes stale.
    _, body = cluster.wait_for(
        lambda: (answer := call(f"{url}/ready"))[0] == 503 and answer, timeout=90,
        what="/ready to fail once the canary is stale",
    )  # fmt: skip
    assert any("no token generated recently" in reason for reason in body["reasons"]), body
    assert call(f"{url}/health")[0] == 200, "alive: the liveness probe must not restart it"
    # The kubelet's readiness probe sees it, the Service drops it, the fallback takes over.
    cluster.wait_for(
        lambda: not ready(cluster.get("pod", primary["metadata"]["name"], namespace)),
        timeout=60,
        what="the kubelet's readiness probe to fail",
    )
    cluster.wait_for(
        lambda: primary["status"]["podIP"] not in ready_endpoints(cluster, namespace, name),
        timeout=60,
        what="the Service to drop the wedged pod",
    )
    promoted = wait_condition(cluster, namespace, name, "FallbackActive", "True", timeout=90)
    assert promoted["reason"] == "PrimaryUnavailable", promoted
    assert ready_endpoints(cluster, namespace, name) == {spare["status"]["podIP"]}
    served = stream_completion(service, max_tokens=8)
    assert served.clean, served

    set_faults(url, wedge=False)
    wait_condition(
        cluster, namespace, name, "FallbackActive", "False", "PrimaryServing", timeout=120
    )
    assert ready_endpoints(cluster, namespace, name) == {primary["status"]["podIP"]}
    assert stream_completion(service, max_tokens=8).clean
    again = cluster.get("pod", primary["metadata"]["name"], namespace)
    assert again["status"]["containerStatuses"][0]["restartCount"] == 0, "recovered in place"
