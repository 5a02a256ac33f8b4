"""Real workers failing for real: a broken model crash-loops and is rolled back while the last
ready revision serves; a wedged engine fails readiness and the fallback tier takes over."""

from __future__ import annotations

import shutil

from e2e.local_cluster import LocalCluster
from e2e.node.support import (
    SMALL,
    Traffic,
    Watch,
    apply_sample,
    call,
    models_volume,
    pod_url,
    ready_endpoints,
    ready_pods,
    service_url,
    set_faults,
    stream_completion,
)
from e2e.operator_support import (
    patch_spec,
    pods,
    ready,
    status,
    wait_condition,
)

STORIES_PVC = {"pvc": {"claimName": "pagoda-models", "path": "stories260K"}}


def condition_in(version: dict, kind: str) -> dict:
    found = (version.get("status") or {}).get("conditions") or []
    return next((c for c in found if c["type"] == kind), {})


def quoting(found: dict, says: str) -> dict | None:
    return found if found.get("status") == "True" and says in found.get("message", "") else None


def revision_of(pod: dict) -> str:
    return pod["metadata"]["labels"]["pagoda.dev/revision"]


def test_a_broken_model_is_reported_and_rolled_back_while_the_last_ready_revision_serves(
    cluster: LocalCluster, namespace: str, operator
) -> None:
    folder = models_volume(cluster, namespace)
    corrupt = folder / "corrupt"
    shutil.copytree(folder / "stories260K", corrupt)
    weights = corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    name = apply_sample(cluster, namespace, resources=SMALL, rollout={"minReadySeconds": 2})
    # Baked: the revision rollbacks return to.
    wait_condition(cluster, namespace, name, "Progressing", "False", "RolloutComplete", 240)
    good = status(cluster, namespace, name)["revisions"]["lastReady"]
    [serving] = ready_pods(cluster, namespace)

    with (
        Traffic(service_url(cluster, namespace, name)).running() as traffic,
        Watch(cluster, namespace, "llmdeployments").running() as history,
    ):
        for path, says in (
            ("missing", "pagoda serve: model folder /models/missing does not exist"),
            ("corrupt", "model.safetensors is not a readable safetensors file"),
        ):
            source = {"pvc": {"claimName": "pagoda-models", "path": path}}
            patch_spec(cluster, namespace, name, {"model": {"source": source}})
            bad = cluster.wait_for(
                lambda: next((p for p in pods(cluster, namespace) if revision_of(p) != good), None),
                timeout=60,
                what=f"a pod of the revision with model path {path!r}",
            )
            pod = bad["metadata"]["name"]
            # Degraded lasts from the first crash to the rollback: the watch sees it anyway.
            degraded = history.wait(
                lambda version, says=says: quoting(condition_in(version, "Degraded"), says),
                timeout=120,
                what=f"Degraded to quote {says!r}",
            )
            assert degraded["reason"] == "CrashLoopBackOff" and pod in degraded["message"]
            rolled_back = history.wait(
                lambda version, bad=bad: (
                    version["status"]["revisions"].get("rolledBackFrom") == revision_of(bad)
                    and condition_in(version, "RolledBack")
                ),
                timeout=180,
                what=f"the rollback from the revision with model path {path!r}",
            )
            assert (rolled_back["status"], rolled_back["reason"]) == (
                "True",
                "CrashedDuringRollout",
            )
            assert says in rolled_back["message"] and pod in rolled_back["message"]
            assert status(cluster, namespace, name)["revisions"]["lastReady"] == good
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
    cluster: LocalCluster, namespace: str, operator
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
