"""Smoke tests of the local control plane, driven through kubectl as a user would."""

from __future__ import annotations

import json

import pytest

from e2e.build import load_versions
from e2e.cluster import GPU_NODES
from e2e.local_cluster import GPU_RESOURCE, KubectlError, LocalCluster


def gpu_pod(name: str, gpus: int = 1) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "worker", "image": "pagoda/worker:e2e", **_gpus(gpus)}]},
    }


def _gpus(count: int) -> dict:
    return {"resources": {"limits": {GPU_RESOURCE: str(count)}}}


def test_apiserver_reports_the_pinned_version(cluster: LocalCluster) -> None:
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    pinned = load_versions().kubernetes
    assert version["serverVersion"]["gitVersion"] == pinned
    assert version["clientVersion"]["gitVersion"] == pinned


def test_fake_nodes_advertise_gpus_and_are_ready(cluster: LocalCluster) -> None:
    nodes = {node["metadata"]["name"]: node for node in cluster.get("nodes")["items"]}
    assert set(GPU_NODES) <= set(nodes)
    for name, gpus in GPU_NODES.items():
        status = nodes[name]["status"]
        assert status["allocatable"][GPU_RESOURCE] == str(gpus)
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True"


def test_gpu_deployment_is_scheduled_on_a_gpu_node_and_becomes_ready(
    cluster: LocalCluster, namespace: str
) -> None:
    cluster.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "llm"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "llm"}},
                "template": {
                    "metadata": {"labels": {"app": "llm"}},
                    "spec": {
                        "containers": [{"name": "worker", "image": "pagoda/worker:e2e", **_gpus(1)}]
                    },
                },
            },
        },
        namespace=namespace,
    )
    cluster.kubectl("rollout", "status", "deployment/llm", f"-n={namespace}", "--timeout=60s")

    pods = cluster.get("pods", namespace=namespace)["items"]
    assert len(pods) == 2
    for pod in pods:
        assert pod["spec"]["nodeName"] in GPU_NODES
        assert pod["status"]["phase"] == "Running"
        ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True"


def test_a_pod_asking_for_more_gpus_than_any_node_has_stays_pending(
    cluster: LocalCluster, namespace: str
) -> None:
    cluster.apply(gpu_pod("too-big", gpus=max(GPU_NODES.values()) + 1), namespace=namespace)

    def unschedulable():
        conditions = cluster.get("pod", "too-big", namespace)["status"].get("conditions", [])
        return any(c["type"] == "PodScheduled" and c["status"] == "False" for c in conditions)

    cluster.wait_for(unschedulable, what="the scheduler to report too-big unschedulable")
    pod = cluster.get("pod", "too-big", namespace)
    assert pod["status"]["phase"] == "Pending"
    assert "nvidia.com/gpu" in pod["status"]["conditions"][0]["message"]


def test_gpu_resource_quota_is_enforced_by_the_apiserver(
    cluster: LocalCluster, namespace: str
) -> None:
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "gpus"},
            "spec": {"hard": {f"requests.{GPU_RESOURCE}": "1"}},
        },
        namespace=namespace,
    )
    # Admission needs the quota controller to have filled in the quota's status first.
    cluster.wait_for(
        lambda: cluster.get("resourcequota", "gpus", namespace).get("status", {}).get("hard"),
        what="the quota controller to fill in status.hard",
    )
    cluster.apply(gpu_pod("first"), namespace=namespace)

    with pytest.raises(KubectlError) as denied:
        cluster.apply(gpu_pod("second"), namespace=namespace)

    message = denied.value.result.stderr
    assert "exceeded quota: gpus" in message
    assert f"requested: requests.{GPU_RESOURCE}=1" in message
    assert f"limited: requests.{GPU_RESOURCE}=1" in message
    assert cluster.try_kubectl("get", "pod", "second", f"-n={namespace}").returncode != 0


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.smoke.e2e.pagoda.dev"},
    "spec": {
        "group": "smoke.e2e.pagoda.dev",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["model"],
                                "properties": {
                                    "model": {"type": "string"},
                                    "replicas": {"type": "integer", "minimum": 0},
                                },
                            }
                        },
                    }
                },
            }
        ],
    },
}


def widget(name: str, spec: dict) -> dict:
    return {
        "apiVersion": "smoke.e2e.pagoda.dev/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": spec,
    }


def test_crd_schema_rejects_an_invalid_object_with_the_apiservers_message(
    cluster: LocalCluster, namespace: str
) -> None:
    cluster.apply(CRD)
    try:
        cluster.wait_crds_established(CRD["metadata"]["name"])
        cluster.apply(widget("good", {"model": "stories", "replicas": 2}), namespace=namespace)

        result = cluster.try_kubectl(
            "apply", f"-n={namespace}", "-f", "-", input=json.dumps(widget("bad", {"replicas": -1}))
        )

        assert result.returncode != 0
        assert 'The Widget "bad" is invalid' in result.stderr
        assert "spec.model: Required value" in result.stderr
        assert "spec.replicas: Invalid value: -1" in result.stderr
        assert "should be greater than or equal to 0" in result.stderr
    finally:
        cluster.kubectl("delete", "crd", CRD["metadata"]["name"], "--wait=false")


def test_deleting_a_namespace_garbage_collects_its_workloads(cluster: LocalCluster) -> None:
    name = "e2e-doomed"
    cluster.create_namespace(name)
    cluster.kubectl(
        "create", "deployment", "doomed", "--image=pagoda/worker:e2e", "--replicas=2", f"-n={name}"
    )
    cluster.kubectl("rollout", "status", "deployment/doomed", f"-n={name}", "--timeout=60s")
    assert len(cluster.get("pods", namespace=name)["items"]) == 2

    cluster.delete_namespace(name)  # waits until the namespace itself is gone

    assert cluster.try_kubectl("get", "namespace", name).returncode != 0
    for kind in ("deployments", "replicasets", "pods"):
        leftovers = cluster.get(kind, namespace=name)["items"]
        assert leftovers == [], f"{kind} left in deleted namespace {name}"


def test_rbac_limits_a_service_account_to_what_its_role_grants(
    cluster: LocalCluster, namespace: str, tmp_path
) -> None:
    cluster.kubectl("create", "serviceaccount", "reader", f"-n={namespace}")
    as_reader = cluster.service_account_kubeconfig("reader", namespace, tmp_path / "reader")

    def reader(*args: str):
        return cluster.try_kubectl(f"--kubeconfig={as_reader}", *args)

    denied = reader("get", "pods")
    assert denied.returncode != 0
    assert (
        f'User "system:serviceaccount:{namespace}:reader" cannot list resource "pods"'
        in denied.stderr
    )

    cluster.kubectl(
        "create", "rolebinding", "reader-view", "--clusterrole=view",
        f"--serviceaccount={namespace}:reader", f"-n={namespace}",
    )  # fmt: skip
    cluster.wait_for(lambda: reader("get", "pods").returncode == 0, what="the binding to apply")
    assert reader("create", "configmap", "x").returncode != 0  # view does not allow writes
    assert reader("get", "pods", "-n=kube-system").returncode != 0  # nor other namespaces
