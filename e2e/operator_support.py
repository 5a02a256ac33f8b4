"""Shared by the operator's e2e tests (no tests here): the CRDs, `pagoda operator` as a child
process against the test cluster, LLMDeployment manifests and status reads."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from e2e.local_cluster import LocalCluster
from e2e.processes import Process, free_port, stop_pid

REPO = Path(__file__).resolve().parents[1]
CRDS = REPO / "crds"
PAGODA = Path(sys.executable).parent / "pagoda"
STORIES_SOURCE = {"pvc": {"claimName": "pagoda-models", "path": "stories260K"}}
# KWOK pods never crash unless a test says so: a short bake keeps rollouts quick.
BAKE_SECONDS = 1


def install_crds(cluster: LocalCluster) -> None:
    cluster.kubectl("apply", "--server-side", "-k", str(CRDS))
    cluster.wait_crds_established("llmdeployments.pagoda.dev", "clusterkopfpeerings.kopf.dev")


def remove_crds(cluster: LocalCluster) -> None:
    cluster.kubectl("delete", "-k", str(CRDS), "--ignore-not-found", "--timeout=120s")


class Operator:
    """`pagoda operator` run as a user would, with its own health and metrics ports."""

    def __init__(
        self, cluster: LocalCluster, workdir: Path, *args: str, kubeconfig: Path | None = None
    ):
        self.liveness_port = free_port()
        self.metrics_port = free_port()
        while self.metrics_port == self.liveness_port:  # free_port may hand out the same one
            self.metrics_port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.process = Process(
            "operator",
            [
                str(PAGODA), "operator",
                f"--kubeconfig={kubeconfig or cluster.kubeconfig}",
                "--bind=127.0.0.1",
                f"--liveness-port={self.liveness_port}",
                f"--metrics-port={self.metrics_port}",
                "--peering-lifetime=10",
                *args,
            ],
            workdir / f"operator-{self.liveness_port}.log",
        )  # fmt: skip

    def start(self) -> Operator:
        self.process.start(die_with_parent=True)
        deadline = time.monotonic() + 60
        while not self.healthy():
            if self.process.exited() is not None:
                raise RuntimeError(f"the operator exited:\n{self.process.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the operator is not healthy:\n{self.process.log_tail()}")
            time.sleep(0.2)
        return self

    def stop(self, crash: bool = False) -> None:
        """SIGTERM: it leaves the peering and stops; crash=True: SIGKILL, nothing cleaned up."""
        if crash:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
        stop_pid(self.process.pid, grace=10.0)

    def healthy(self) -> dict | None:
        try:
            url = f"http://127.0.0.1:{self.liveness_port}/healthz"
            with urllib.request.urlopen(url, timeout=1) as response:
                return json.loads(response.read())
        except OSError:
            return None

    def metric(self, name: str, **labels: str) -> float:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
        wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
        series = f"{name}{{{wanted}}}" if labels else name
        for line in text.splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
        return 0.0

    def log(self) -> str:
        return self.process.log.read_text(errors="replace")


@contextlib.contextmanager
def running_operator(
    cluster: LocalCluster, workdir: Path, *args: str, **kwargs
) -> Iterator[Operator]:
    operator = Operator(cluster, workdir, *args, **kwargs).start()
    try:
        yield operator
    finally:
        operator.stop()


def llmdeployment(name: str, **spec: Any) -> dict:
    body = {"model": {"name": "stories", "source": STORIES_SOURCE}, "replicas": 2}
    body.update(spec)
    body["rollout"] = {"minReadySeconds": BAKE_SECONDS, **spec.get("rollout", {})}
    return {
        "apiVersion": "pagoda.dev/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": name},
        "spec": body,
    }


def models_volume(
    cluster: LocalCluster, namespace: str, with_claim: bool = True, path: Path | None = None
) -> None:
    """A PersistentVolume reserved for the namespace's `pagoda-models` claim, and the claim
    unless the test applies its own (KWOK pods never read it, but an unbound claim would keep
    them Pending). `path`: the node's folder behind it, for real pods (e2e/node)."""
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"models-{namespace}"},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "hostPath": {"path": str(path or f"/tmp/{namespace}")},
            "claimRef": {"namespace": namespace, "name": "pagoda-models"},
        },
    }
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "pagoda-models"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    cluster.apply(volume, *([claim] if with_claim else []), namespace=namespace)
    if with_claim:  # bound before any pod asks for it, so the scheduler never sees it unbound
        cluster.wait_for(
            lambda: (
                cluster.get("pvc", "pagoda-models", namespace)["status"].get("phase") == "Bound"
            ),
            what="the models claim to bind",
        )


def patch_spec(cluster: LocalCluster, namespace: str, name: str, spec: dict) -> None:
    """Merge-patch an LLMDeployment's spec, as a user editing it would."""
    body = json.dumps({"spec": spec})
    cluster.kubectl("patch", f"llmd/{name}", f"-n={namespace}", "--type=merge", f"-p={body}")


def status(cluster: LocalCluster, namespace: str, name: str) -> dict:
    return cluster.get("llmdeployment", name, namespace).get("status") or {}


def condition(cluster: LocalCluster, namespace: str, name: str, kind: str) -> dict:
    found = status(cluster, namespace, name).get("conditions", [])
    return next((c for c in found if c["type"] == kind), {})


def wait_condition(
    cluster: LocalCluster,
    namespace: str,
    name: str,
    kind: str,
    value: str,
    reason: str | None = None,
    timeout: float = 60,
    message: str = "",
) -> dict:
    """Wait until condition `kind` has status `value` (and `reason`, and a message containing
    `message`, when given)."""

    def check():
        found = condition(cluster, namespace, name, kind)
        if (
            found.get("status") == value
            and reason in (None, found.get("reason"))
            and message in found.get("message", "")
        ):
            return found
        return None

    wanted = f"{name} {kind}={value} {reason or ''} {message}"
    return cluster.wait_for(check, timeout, wanted)


def events(cluster: LocalCluster, namespace: str, name: str) -> list[dict]:
    found = cluster.get("events", namespace=namespace)["items"]
    return [
        e
        for e in found
        if e["involvedObject"].get("name") == name
        and e["involvedObject"].get("kind") == "LLMDeployment"
    ]


def pods(cluster: LocalCluster, namespace: str, tier: str | None = None) -> list[dict]:
    selector = "pagoda.dev/deployment" + (f",pagoda.dev/tier={tier}" if tier else "")
    found = cluster.kubectl("get", "pods", f"-n={namespace}", f"-l={selector}", "-o=json")
    return json.loads(found.stdout)["items"]


def ready(pod: dict) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
