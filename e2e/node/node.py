"""One real node joined to the e2e control plane: containerd, a bridge pod network, the
kubelet and kube-proxy, all inside the run's network namespace (see e2e/node/init.py)."""

from __future__ import annotations

import ipaddress
import json
import time
from pathlib import Path

import yaml

from e2e.control_plane import POD_CIDR, ControlPlane
from e2e.local_cluster import LocalCluster
from e2e.node.containerd import Containerd
from e2e.node.host import CGROUP_ROOT
from e2e.pki import Identity
from e2e.processes import Process, stop_pid

NODE_NAME = "pagoda-node"
# The node's address: on the namespace's loopback device, but not a loopback address (the
# kubelet refuses those). It exists only inside the run's network namespace.
NODE_IP = "10.200.0.1"
# Pods get addresses from one /24 of the cluster's pod range, on the bridge `cni0`.
NODE_POD_SUBNET = str(next(ipaddress.ip_network(POD_CIDR).subnets(new_prefix=24)))
KUBELET = Identity("kubelet", f"system:node:{NODE_NAME}", ("system:nodes",))
KUBE_PROXY = Identity("kube-proxy", "system:kube-proxy")  # bound to system:node-proxier


class Node:
    def __init__(
        self, plane: ControlPlane, workdir: Path, containerd_root: Path, sandbox_image: str
    ):
        self.plane = plane
        self.workdir = workdir
        self.containerd = Containerd(containerd_root, workdir, plane.log_dir, sandbox_image)
        self.processes: list[Process] = []

    def start_runtime(self) -> None:
        """containerd with the pod network's config (images are imported next)."""
        self.containerd.cni_conf_dir.mkdir(parents=True, exist_ok=True)
        (self.containerd.cni_conf_dir / "10-pagoda-e2e.conflist").write_text(
            json.dumps(self._cni_config(), indent=2)
        )
        self.containerd.start()

    def join(self, cluster: LocalCluster, timeout: float = 120) -> float:
        """Start the kubelet and kube-proxy; wait until the node is Ready. Returns seconds."""
        started = time.monotonic()
        self._spawn("kubelet", *self._kubelet_args())
        self._spawn("kube-proxy", f"--config={self._kube_proxy_config()}")
        cluster.wait_condition("node", NODE_NAME, "Ready", timeout=timeout)
        return time.monotonic() - started

    def stop(self) -> None:
        # The run's PID namespace takes care of containers and shims; stop in order so the
        # logs end cleanly.
        for process in reversed([self.containerd.process, *self.processes]):
            if process.popen is not None:
                stop_pid(process.pid)

    def log_report(self, lines: int = 30) -> str:
        every = [self.containerd.process, *self.processes]
        return "\n".join(f"--- {p.name} ({p.log}) ---\n{p.log_tail(lines)}" for p in every)

    def _spawn(self, binary: str, *args: str) -> None:
        process = Process(
            binary,
            [str(self.plane.bin_dir / binary), *args],
            self.plane.log_dir / f"{binary}.log",
        )
        self.processes.append(process)
        process.start(die_with_parent=True)

    def _cni_config(self) -> dict:
        return {
            "cniVersion": "0.4.0",
            "name": "pagoda-e2e",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": False,  # nowhere to masquerade to: the namespace has no uplink
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": NODE_POD_SUBNET}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.workdir / "cni-ipam"),
                    },
                }
            ],
        }

    def _kubelet_args(self) -> list[str]:
        root = self.workdir / "kubelet"
        root.mkdir(parents=True, exist_ok=True)
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # This machine's cgroups are v1 (a hybrid layout that can't be changed here).
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{CGROUP_ROOT}",
            "containerRuntimeEndpoint": self.containerd.endpoint,
            "podLogsDir": str(self.workdir / "pod-logs"),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            # The apiserver reaches the kubelet for logs and exec; nothing else can reach it.
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "failSwapOn": False,
            # Images are imported, never pulled: never garbage-collect them.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "200Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
            },
            "maxPods": 30,
            "serializeImagePulls": False,
            "resolvConf": "/etc/resolv.conf",
        }
        config_file = self.workdir / "kubelet.yaml"
        config_file.write_text(yaml.safe_dump(config))
        return [
            f"--config={config_file}",
            f"--kubeconfig={self.plane.issue_kubeconfig(KUBELET)}",
            f"--root-dir={root}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}",
        ]

    def _kube_proxy_config(self) -> Path:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.plane.issue_kubeconfig(KUBE_PROXY))},
            "hostnameOverride": NODE_NAME,
            "mode": "iptables",
            "clusterCIDR": POD_CIDR,
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            # Zero: leave the host-wide conntrack settings alone.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        }
        path = self.workdir / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(config))
        return path
