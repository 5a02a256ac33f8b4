"""The real-node cluster: the e2e control plane (without KWOK) plus one kubelet node."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from e2e.control_plane import ControlPlane, ControlPlaneError
from e2e.local_cluster import LocalCluster
from e2e.node.node import NODE_IP, Node
from e2e.node.settings import RunSettings


def start_node_cluster(
    name: str, settings: RunSettings, log: Callable[[str], None]
) -> tuple[ControlPlane, Node, LocalCluster]:
    bin_dir = Path(settings.bin_dir)
    # Pods reach the apiserver at the node's address (the gateway watches EndpointSlices).
    plane = ControlPlane(bin_dir, name, kwok=False, pod_reachable_ip=NODE_IP)
    log(f"e2e-node: control plane up in {plane.start():.1f} s")
    cluster = LocalCluster(plane.kubeconfig, plane.server, bin_dir / "kubectl")
    node = Node(
        plane,
        Path(settings.workdir),
        Path(settings.containerd_root),
        settings.images["pause"].reference,
    )
    try:
        node.start_runtime()
        wanted = {i.reference: (Path(i.archive), i.digest) for i in settings.images.values()}
        for reference, seconds in node.containerd.hold_images(wanted).items():
            done = "already held" if seconds is None else f"imported in {seconds:.1f} s"
            log(f"e2e-node: image {reference}: {done}")
        log(f"e2e-node: node Ready in {node.join(cluster):.1f} s")
    except Exception as error:
        report = plane.log_report() + "\n" + node.log_report()
        node.stop()
        plane.stop()
        raise ControlPlaneError(f"the node did not come up: {error}\n{report}") from error
    return plane, node, cluster
