"""An LLMDeployment's life on a real control plane: created, served, rolled, deleted."""

from __future__ import annotations

import contextlib
import json
import threading

from kubernetes import client, config, watch
from urllib3.exceptions import ProtocolError

from e2e.operator_support import (
    REPO,
    events,
    llmdeployment,
    models_volume,
    pods,
    ready,
    status,
    wait_condition,
)

SAMPLE = REPO / "manifests" / "samples" / "cpu-stories.yaml"


def children(cluster, namespace: str) -> dict[str, dict]:
    """Everything labelled as owned by an LLMDeployment, by kind/name."""
    kinds = "deployments,services,poddisruptionbudgets,configmaps"
    listing = cluster.kubectl("get", kinds, f"-n={namespace}", "-o=json", "--show-managed-fields")
    found = json.loads(listing.stdout)["items"]
    return {
        f"{o['kind']}/{o['metadata']['name']}": o
        for o in found
        if "pagoda.dev/deployment" in o["metadata"].get("labels", {})
    }


def test_sample_becomes_ready_with_its_children_and_endpoint(cluster, namespace, operator):
    models_volume(cluster, namespace, with_claim=False)  # the sample brings its claim
    cluster.kubectl("apply", f"-n={namespace}", "-f", str(SAMPLE))
    ready_condition = wait_condition(cluster, namespace, "stories", "Ready", "True")
    assert f"http://stories.{namespace}.svc:8000/v1" in ready_condition["message"]
    # The sample keeps the default bake time (rollout.minReadySeconds 30 s) before Ready.
    cluster.wait_for(
        lambda: status(cluster, namespace, "stories")["phase"] == "Ready",
        timeout=90,
        what="the first revision to finish baking",
    )
    current = status(cluster, namespace, "stories")
    assert current["endpoint"] == f"http://stories.{namespace}.svc:8000/v1"
    assert current["model"] == "stories260K"
    assert current["readyReplicas"] == 1
    assert current["observedGeneration"] == 1
    owned = children(cluster, namespace)
    revision = current["revisions"]["current"]
    assert set(owned) == {
        "Deployment/stories-primary",
        "Service/stories",
        "PodDisruptionBudget/stories",
        f"ConfigMap/stories-primary-{revision}",
    }
    uid = cluster.get("llmdeployment", "stories", namespace)["metadata"]["uid"]
    for obj in owned.values():
        [reference] = obj["metadata"]["ownerReferences"]
        assert reference["uid"] == uid and reference["controller"] is True
        managers = {m["manager"] for m in obj["metadata"]["managedFields"]}
        assert "pagoda-operator" in managers
    # The status too is written as pagoda-operator (not the client library's default name).
    listing = cluster.kubectl(
        "get", "llmd", "stories", f"-n={namespace}", "-o=json", "--show-managed-fields"
    )
    writers = {
        (m["manager"], m.get("subresource"))
        for m in json.loads(listing.stdout)["metadata"]["managedFields"]
    }
    assert ("pagoda-operator", "status") in writers, writers
    assert not any(manager.startswith("OpenAPI-Generator") for manager, _ in writers)
    [worker] = pods(cluster, namespace)
    assert ready(worker)
    container = worker["spec"]["containers"][0]
    assert container["command"][:2] == ["pagoda", "serve"]
    assert "nvidia.com/gpu" not in container["resources"]["requests"]  # the CPU sample
    service = owned["Service/stories"]
    assert service["spec"]["selector"]["pagoda.dev/tier"] == "primary"

    table = cluster.kubectl("get", "llmd", f"-n={namespace}").stdout.split()
    header = ["NAME", "READY", "UP-TO-DATE", "PHASE", "TIER", "MODEL", "GPUS", "AGE"]
    assert table[:8] == header
    assert table[8:15] == ["stories", "True", "True", "Ready", "primary", "stories260K", "0"]


def test_reconciling_again_changes_nothing(cluster, namespace, operator):
    models_volume(cluster, namespace)
    cluster.apply(llmdeployment("quiet", replicas=2), namespace=namespace)
    wait_condition(cluster, namespace, "quiet", "Progressing", "False", "RolloutComplete")
    cluster.wait_for(lambda: status(cluster, namespace, "quiet").get("readyReplicas") == 2)
    before = {k: o["metadata"]["resourceVersion"] for k, o in children(cluster, namespace).items()}
    status_before = status(cluster, namespace, "quiet")
    reconciles = operator.metric("pagoda_operator_reconciles_total", outcome="ok")
    writes = operator.metric("pagoda_operator_status_writes_total")

    # Touching metadata is a watch event: the operator reconciles, and must change nothing.
    for n in range(3):
        cluster.kubectl("annotate", "llmd/quiet", f"-n={namespace}", f"touch={n}", "--overwrite")
    cluster.wait_for(
        lambda: operator.metric("pagoda_operator_reconciles_total", outcome="ok") >= reconciles + 3,
        what="three more reconciliations",
    )
    after = {k: o["metadata"]["resourceVersion"] for k, o in children(cluster, namespace).items()}
    assert after == before, "no resourceVersion churn on children"
    assert status(cluster, namespace, "quiet") == status_before
    assert operator.metric("pagoda_operator_status_writes_total") == writes


def test_model_change_rolls_pods_one_step_at_a_time(cluster, namespace, operator):
    models_volume(cluster, namespace)
    replicas = 3
    rollout = {"maxSurge": 1, "maxUnavailable": 0}
    cluster.apply(llmdeployment("roll", replicas=replicas, rollout=rollout), namespace=namespace)
    wait_condition(cluster, namespace, "roll", "Progressing", "False", "RolloutComplete")
    old = status(cluster, namespace, "roll")["revisions"]["current"]

    recorded, stop = [], threading.Event()
    api = client.CoreV1Api(config.new_client_from_config(str(cluster.kubeconfig)))
    listing = api.list_namespaced_pod(namespace)
    watcher = watch.Watch()

    def record():
        stream = watcher.stream(
            api.list_namespaced_pod,
            namespace,
            resource_version=listing.metadata.resource_version,
            timeout_seconds=120,
        )
        with contextlib.suppress(ProtocolError):  # the connection closes when we stop
            for event in stream:
                recorded.append((event["type"], event["object"]))
                if stop.is_set():
                    break

    thread = threading.Thread(target=record, daemon=True)
    thread.start()
    cluster.kubectl(
        "patch", "llmd/roll", f"-n={namespace}", "--type=merge",
        "-p", '{"spec": {"model": {"name": "stories-v2"}}}',
    )  # fmt: skip
    new = cluster.wait_for(
        lambda: (
            (revisions := status(cluster, namespace, "roll")["revisions"])["lastReady"] != old
            and revisions
        ),
        what="the new revision to become the last ready one",
    )
    assert new["current"] == new["lastReady"] == new["desired"]
    wait_condition(cluster, namespace, "roll", "Progressing", "False", "RolloutComplete")
    cluster.wait_for(
        lambda: (
            all(
                p["metadata"]["labels"]["pagoda.dev/revision"] == new["current"]
                for p in pods(cluster, namespace)
            )
            and len(pods(cluster, namespace)) == replicas
        ),
        what="only new pods left",
    )
    stop.set()
    cluster.kubectl("annotate", "llmd/roll", f"-n={namespace}", "wake=1")  # ends the stream
    watcher.stop()
    thread.join(timeout=10)

    # Replay the watch: the pods after every event. Terminating pods no longer count, as for
    # the Deployment controller.
    alive = {p.metadata.name: p for p in listing.items}
    states = []
    for kind, pod in recorded:
        if kind == "DELETED":
            alive.pop(pod.metadata.name, None)
        else:
            alive[pod.metadata.name] = pod
        running = [p for p in alive.values() if not p.metadata.deletion_timestamp]
        serving = [
            p for p in running
            if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        ]  # fmt: skip
        new_ready = sum(p.metadata.labels["pagoda.dev/revision"] == new["current"] for p in serving)
        states.append((len(running), len(serving), new_ready))
    assert states, "the rollout produced pod events"
    assert max(total for total, _, _ in states) <= replicas + 1, "maxSurge 1"
    assert min(serving for _, serving, _ in states) >= replicas, "maxUnavailable 0"
    steps = sorted({new_ready for _, _, new_ready in states})
    assert steps == list(range(replicas + 1)), f"new pods became ready one at a time: {steps}"

    config_maps = [k for k in children(cluster, namespace) if k.startswith("ConfigMap/")]
    assert config_maps == [f"ConfigMap/roll-primary-{new['current']}"], "old revision collected"
    reasons = [e["reason"] for e in events(cluster, namespace, "roll")]
    assert reasons.count("RolloutComplete") >= 2 and "RollingUpdate" in reasons


def test_delete_leaves_nothing_behind(cluster, namespace, operator):
    models_volume(cluster, namespace)
    fallback = {"model": {"source": {"hf": {"repo": "org/small"}}}, "resources": {"gpus": 0}}
    cluster.apply(llmdeployment("gone", fallback=fallback), namespace=namespace)
    wait_condition(cluster, namespace, "gone", "Ready", "True")
    assert cluster.get("llmdeployment", "gone", namespace)["metadata"].get("finalizers") is None
    assert len(children(cluster, namespace)) == 6  # 2 Deployments, 2 ConfigMaps, Service, PDB

    cluster.kubectl("delete", "llmd/gone", f"-n={namespace}", "--timeout=30s")
    cluster.wait_for(
        lambda: not children(cluster, namespace) and not pods(cluster, namespace),
        timeout=60,
        what="the garbage collector to remove every child",
    )
    replica_sets = cluster.get("replicasets", namespace=namespace)["items"]
    assert replica_sets == []
