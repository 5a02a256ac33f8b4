"""The handle e2e tests get: kubectl against the local cluster, plus helpers for common waits,
fake GPU nodes and pod faults."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from e2e.control_plane import KWOK_NODE_ANNOTATION
from e2e.faults import FAULT_ANNOTATION, Fault

GPU_RESOURCE = "nvidia.com/gpu"


class KubectlError(RuntimeError):
    """kubectl exited non-zero; `result` has its stdout and stderr."""

    def __init__(self, result: subprocess.CompletedProcess[str]):
        self.result = result
        command = " ".join(result.args)
        super().__init__(f"`{command}` exited {result.returncode}: {result.stderr.strip()}")


@dataclass(frozen=True)
class LocalCluster:
    """The e2e tests' cluster (e2e/control_plane.py runs it on this machine), driven through
    kubectl as its admin."""

    kubeconfig: Path
    server: str
    """The apiserver's URL, https://127.0.0.1:<port>."""
    kubectl_path: Path

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; raise KubectlError (with stderr) if it fails."""
        result = subprocess.run(
            [str(self.kubectl_path), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise KubectlError(result)
        return result

    def try_kubectl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """kubectl that returns the failed CompletedProcess instead of raising."""
        return self.kubectl(*args, input=input, check=False)

    def apply(self, *manifests: dict[str, Any] | str, namespace: str | None = None) -> str:
        """`kubectl apply` objects given as dicts or YAML text; returns kubectl's output."""
        documents = [m if isinstance(m, str) else yaml.safe_dump(m) for m in manifests]
        args = ["apply", "-f", "-"] + ([f"--namespace={namespace}"] if namespace else [])
        return self.kubectl(*args, input="\n---\n".join(documents)).stdout

    def get(self, kind: str, name: str = "", namespace: str | None = None) -> dict[str, Any]:
        """`kubectl get -o json` as a dict (a List when name is empty)."""
        args = ["get", kind, *([name] if name else []), "-o", "json"]
        if namespace:
            args.append(f"--namespace={namespace}")
        return json.loads(self.kubectl(*args).stdout)

    def wait_for(
        self, check: Callable[[], Any], timeout: float = 60, what: str = "condition"
    ) -> Any:
        """Poll `check` until it returns something truthy, and return that."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.5)

    def wait_condition(
        self,
        kind: str,
        name: str,
        condition: str,
        namespace: str | None = None,
        timeout: float = 60,
    ) -> None:
        """Wait until the object's status has `condition` True. Polled here rather than with
        `kubectl wait`, which fails at once ("status.conditions accessor error") when it reads an
        object whose status nobody has written yet, as with a CRD or node just created."""

        def met() -> bool:
            where = [f"--namespace={namespace}"] if namespace else []
            found = self.try_kubectl("get", kind, name, "-o", "json", *where)
            if found.returncode != 0:
                return False
            conditions = (json.loads(found.stdout).get("status") or {}).get("conditions") or []
            return any(c["type"] == condition and c["status"] == "True" for c in conditions)

        self.wait_for(met, timeout, what=f"{kind}/{name} to be {condition}")

    def wait_crds_established(self, *names: str, timeout: float = 60) -> None:
        for name in names:
            self.wait_condition("crd", name, "Established", timeout=timeout)

    def create_namespace(self, name: str) -> None:
        """Create a namespace and wait for its default service account (pods need it)."""
        self.kubectl("create", "namespace", name)
        self.wait_for(
            lambda: (
                self.try_kubectl("get", "serviceaccount", "default", f"-n={name}").returncode == 0
            ),
            what=f"the default service account in {name}",
        )

    def delete_namespace(self, name: str, wait: bool = True) -> None:
        self.kubectl("delete", "namespace", name, f"--wait={str(wait).lower()}", "--timeout=120s")

    def service_account_kubeconfig(self, name: str, namespace: str, path: Path) -> Path:
        """Write a kubeconfig at `path` that acts as a ServiceAccount (a fresh 2 h token), to test
        what its RBAC allows; the admin kubeconfig is the template."""
        token = self.kubectl("create", "token", name, f"-n={namespace}", "--duration=2h").stdout
        config = yaml.safe_load(self.kubeconfig.read_text())
        user = f"system:serviceaccount:{namespace}:{name}"
        config["users"] = [{"name": user, "user": {"token": token.strip()}}]
        config["contexts"][0]["context"]["user"] = user
        config["contexts"][0]["context"]["namespace"] = namespace
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def add_gpu_node(self, name: str, gpus: int = 4, labels: dict[str, str] | None = None) -> None:
        """Register a fake node, run by KWOK, with `gpus` nvidia.com/gpu; wait until Ready."""
        resources = {"cpu": "32", "memory": "256Gi", "pods": "110", GPU_RESOURCE: str(gpus)}
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {KWOK_NODE_ANNOTATION: "fake"},
                    "labels": {
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "type": "kwok",
                        **(labels or {}),
                    },
                },
                "status": {"capacity": resources, "allocatable": resources},
            }
        )
        self.wait_condition("node", name, "Ready")

    def wait_pod_ready(self, name: str, namespace: str, timeout: float = 60) -> None:
        self.wait_condition("pod", name, "Ready", namespace, timeout)

    def inject_fault(self, pod: str, namespace: str, fault: Fault | str) -> None:
        """Make KWOK fake `fault` (see e2e/faults.py) on a pod; a different fault already on it
        is cleared first."""
        fault = Fault(fault)
        annotations = self.get("pod", pod, namespace)["metadata"].get("annotations") or {}
        current = annotations.get(FAULT_ANNOTATION)
        if current == fault:
            return
        if current:
            self.clear_fault(pod, namespace)
            self.wait_pod_ready(pod, namespace)
        self.kubectl("annotate", f"pod/{pod}", f"-n={namespace}", f"{FAULT_ANNOTATION}={fault}")

    def clear_fault(self, pod: str, namespace: str) -> None:
        """Remove the fault annotation; the pod becomes Ready again."""
        self.kubectl("annotate", f"pod/{pod}", f"-n={namespace}", f"{FAULT_ANNOTATION}-")

    def make_pod_unready(self, pod: str, namespace: str) -> None:
        self.inject_fault(pod, namespace, Fault.UNREADY)

    def make_pod_crash_loop(self, pod: str, namespace: str) -> None:
        self.inject_fault(pod, namespace, Fault.CRASH_LOOP)

    def make_pod_oom_killed(self, pod: str, namespace: str) -> None:
        self.inject_fault(pod, namespace, Fault.OOM_KILLED)

    def make_pod_image_pull_fail(self, pod: str, namespace: str) -> None:
        self.inject_fault(pod, namespace, Fault.IMAGE_PULL_ERROR)
