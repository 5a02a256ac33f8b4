"""The node itself: a real kubelet joined the control plane, and a pod really runs on it."""

from __future__ import annotations

from e2e.local_cluster import LocalCluster
from e2e.node import settings
from e2e.node.node import NODE_IP, NODE_NAME


def test_the_kubelet_node_is_ready_with_its_address(cluster: LocalCluster) -> None:
    node = cluster.get("node", NODE_NAME)
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == NODE_IP
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True", ready


def test_a_pod_runs_in_the_pod_network(cluster: LocalCluster, namespace: str) -> None:
    pause = settings.current().images["pause"].reference
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "sleeper"},
            "spec": {
                "containers": [{"name": "pause", "image": pause, "imagePullPolicy": "Never"}],
                "terminationGracePeriodSeconds": 1,
            },
        },
        namespace=namespace,
    )
    cluster.wait_pod_ready("sleeper", namespace, timeout=60)
    pod = cluster.get("pod", "sleeper", namespace)
    assert pod["status"]["podIP"].startswith("10.244.0.")
    assert pod["spec"]["nodeName"] == NODE_NAME
