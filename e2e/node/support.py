"""Shared by the real-pod tests: the sample LLMDeployment on the node, the model on a volume,
and OpenAI requests to real workers (through a pod's address or the Service's ClusterIP, both
inside the run's network namespace)."""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from e2e import operator_support
from e2e.local_cluster import LocalCluster
from e2e.node import settings
from e2e.operator_support import REPO, pods, ready

SAMPLE = REPO / "manifests" / "samples" / "cpu-stories.yaml"
MODEL_DIR = REPO / "worker" / "pagoda_worker" / "default_model" / "stories260K"
PORT = 8000
# Two workers side by side (a rollout, a warm fallback) on this 2-core node: half a core each.
SMALL = {"gpus": 0, "cpu": "500m", "memory": "2Gi"}
# Lets a test tell a worker to misbehave (POST /debug/faults); nothing else does.
TEST_FAULTS = {"name": "PAGODA_TEST_FAULTS", "value": "1"}


def node_folder(*parts: str) -> Path:
    """A folder on the node for hostPath volumes, inside the run's folder (removed with it)."""
    run = settings.current()
    assert run is not None
    folder = Path(run.workdir, "volumes", *parts)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    return folder


def models_volume(cluster: LocalCluster, namespace: str) -> Path:
    """A PersistentVolume holding the default model at `stories260K/`, reserved for the
    sample's claim `pagoda-models` (a static volume: the node has no provisioner). Returns the
    folder, for tests that add broken models beside it."""
    folder = node_folder(namespace)
    shutil.copytree(MODEL_DIR, folder / "stories260K", dirs_exist_ok=True)
    _world_readable(folder)
    operator_support.models_volume(cluster, namespace, with_claim=False, path=folder)
    return folder


def _world_readable(folder: Path) -> None:
    # Workers run as uid 1000; a hostPath volume keeps the host's owners and modes.
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def apply_sample(cluster: LocalCluster, namespace: str, **spec: object) -> str:
    """manifests/samples/cpu-stories.yaml applied as a user would, with the model on a volume,
    adapted to the node: the worker image is imported (never pulled) and test faults can be
    switched on. `spec` keys replace the LLMDeployment's top-level spec fields. Returns its
    name."""
    models_volume(cluster, namespace)
    documents = list(yaml.safe_load_all(SAMPLE.read_text()))
    deployment = next(d for d in documents if d["kind"] == "LLMDeployment")
    deployment["spec"].update(imagePullPolicy="Never", env=[TEST_FAULTS], **spec)
    cluster.apply(*documents, namespace=namespace)
    return deployment["metadata"]["name"]


def ready_pods(cluster: LocalCluster, namespace: str, tier: str | None = None) -> list[dict]:
    return [p for p in pods(cluster, namespace, tier) if ready(p)]


def pod_url(pod: dict) -> str:
    return f"http://{pod['status']['podIP']}:{PORT}"


def service_url(cluster: LocalCluster, namespace: str, name: str) -> str:
    service = cluster.get("service", name, namespace)
    return f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"


def ready_endpoints(cluster: LocalCluster, namespace: str, service: str) -> set[str]:
    """The pod addresses the Service sends traffic to (its EndpointSlices' ready endpoints)."""
    found = cluster.kubectl(
        "get", "endpointslices", f"-n={namespace}",
        f"-l=kubernetes.io/service-name={service}", "-o=json",
    )  # fmt: skip
    return {
        address
        for item in json.loads(found.stdout)["items"]
        for endpoint in item.get("endpoints") or []
        if endpoint.get("conditions", {}).get("ready")
        for address in endpoint["addresses"]
    }


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict
    headers: dict[str, str]  # names in lower case


def send(
    url: str, body: dict | None = None, headers: dict[str, str] | None = None, timeout: float = 10
) -> Answer:
    """GET (or POST `body` as JSON) and return the whole answer, errors included."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data, {"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return _answer(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        return _answer(error.code, error.headers, error.read())


def _answer(status: int, headers, raw: bytes) -> Answer:
    return Answer(status, json.loads(raw or b"{}"), {k.lower(): v for k, v in headers.items()})


def call(url: str, body: dict | None = None, timeout: float = 10) -> tuple[int, dict]:
    """GET (or POST `body` as JSON) and return the status and the JSON answer, errors included."""
    answer = send(url, body, timeout=timeout)
    return answer.status, answer.body


def set_faults(url: str, **faults: object) -> dict:
    """Turn test faults of one worker on or off (its POST /debug/faults)."""
    status, answer = call(f"{url}/debug/faults", faults)
    assert status == 200, f"POST /debug/faults: {status} {answer}"
    return answer


@dataclass
class Stream:
    """One streamed completion as the client saw it."""

    status: int = 0
    chunks: list[dict] = field(default_factory=list)
    error: str | None = None  # an error event, an HTTP error body, or a connection error
    done: bool = False  # the `data: [DONE]` line arrived
    started_at: float = 0.0  # time.time() when the client began to connect
    ended_at: float = 0.0  # time.time() when the client saw the end
    phase: str = ""  # where it was when it ended: connect, headers or body
    # Got no response: the kernel's open connections to the address then (tracked_connections).
    tracked: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(c["choices"][0]["text"] for c in self.chunks if c.get("choices"))

    @property
    def finish_reason(self) -> str | None:
        reasons = [c["choices"][0].get("finish_reason") for c in self.chunks if c.get("choices")]
        return next((r for r in reversed(reasons) if r), None)

    @property
    def clean(self) -> bool:
        return self.status == 200 and self.done and self.error is None and bool(self.finish_reason)


def stream_completion(
    url: str,
    model: str = "stories260K",
    prompt: str = "Once upon a time",
    max_tokens: int = 32,
    timeout: float = 120,
    started: threading.Event | None = None,
    headers: dict[str, str] | None = None,
) -> Stream:
    """POST /v1/completions with stream=true and read the SSE stream to its end. Never
    raises: whatever went wrong is in the result. `started` is set at the first chunk;
    `headers` go with the request (a tenant's key)."""
    result = Stream()
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,  # greedy: the same text from every worker of one revision
        "stream": True,
    }
    connection = http.client.HTTPConnection(url.split("//", 1)[1], timeout=timeout)
    result.started_at = time.time()
    try:
        result.phase = "connect"
        connection.connect()
        result.phase = "headers"
        connection.request(
            "POST",
            "/v1/completions",
            json.dumps(body),
            {"Content-Type": "application/json", **(headers or {})},
        )
        response = connection.getresponse()
        result.status = response.status
        result.phase = "body"
        if response.status != 200:
            result.error = response.read().decode(errors="replace")
            return result
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            data = line.removeprefix("data: ")
            if data == "[DONE]":
                result.done = True
                break
            event = json.loads(data)
            if "error" in event:
                result.error = json.dumps(event["error"])
            else:
                result.chunks.append(event)
                if started is not None:
                    started.set()
    except (OSError, http.client.HTTPException, ValueError) as error:
        result.error = f"{type(error).__name__}: {error}"
        if result.status == 0:
            result.tracked = tracked_connections(connection.host, connection.port)
    finally:
        connection.close()
        result.ended_at = time.time()
    return result


def tracked_connections(host: str, port: int) -> list[str]:
    """Connections to host:port that conntrack holds open in this network namespace: for a
    request that got no response, whether it reached a pod (ESTABLISHED) or not (SYN_SENT),
    and which pod a Service's rules sent it to (the reply's `src=`)."""
    try:
        table = Path("/proc/net/nf_conntrack").read_text().splitlines()
    except OSError:
        return []
    return [
        " ".join(line.split()[5:])  # from the state on: the family and timeouts say nothing
        for line in table
        if f" dst={host} " in line
        and f" dport={port} " in line
        and (" SYN_SENT " in line or " ESTABLISHED " in line)
    ]


class Traffic:
    """Streamed completions back to back from a few client threads until stopped, as steady
    load on a Service during a rollout; every outcome is kept."""

    def __init__(self, url: str, clients: int = 2, max_tokens: int = 24):
        self.url = url
        self.max_tokens = max_tokens
        self.results: list[Stream] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        while not self._stop.is_set():
            result = stream_completion(self.url, max_tokens=self.max_tokens, timeout=60)
            with self._lock:
                self.results.append(result)
            time.sleep(0.05)

    def failures(self) -> list[Stream]:
        with self._lock:
            return [r for r in self.results if not r.clean]

    @contextlib.contextmanager
    def running(self) -> Iterator[Traffic]:
        for thread in self._threads:
            thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            for thread in self._threads:
                thread.join(timeout=90)


class Watch:
    """Every version of a namespace's objects of one kind, from `kubectl get --watch`: a state
    that lasts a moment (a container's exit code just before its pod goes, a condition between
    a crash and the rollback) is seen all the same."""

    def __init__(self, cluster: LocalCluster, namespace: str, kind: str):
        self._command = [
            str(cluster.kubectl_path), f"--kubeconfig={cluster.kubeconfig}",
            "get", kind, f"-n={namespace}", "--watch", "-o=json",
        ]  # fmt: skip
        self._seen: list[dict] = []
        self._changed = threading.Condition()

    def _read(self, stream) -> None:
        decoder, buffer = json.JSONDecoder(), ""
        for line in stream:
            buffer += line
            try:
                found, end = decoder.raw_decode(buffer.lstrip())
            except json.JSONDecodeError:
                continue  # an object spans lines: read on
            buffer = buffer.lstrip()[end:]
            with self._changed:
                self._seen.append(found)
                self._changed.notify_all()

    def wait(self, matches: Callable[[dict], Any], timeout: float, what: str) -> Any:
        """The first non-empty `matches(version)` over every version seen, waiting for more."""

        def first() -> Any:
            return next(filter(None, map(matches, self._seen)), None)

        with self._changed:
            if not self._changed.wait_for(first, timeout):
                raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
            return first()

    @contextlib.contextmanager
    def running(self) -> Iterator[Watch]:
        process = subprocess.Popen(self._command, stdout=subprocess.PIPE, text=True)
        reader = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
        reader.start()
        try:
            yield self
        finally:
            process.terminate()
            process.wait(timeout=10)
            reader.join(timeout=10)


def wait_exit(pods: Watch, name: str, container: str, timeout: float) -> int:
    """The exit code of `container` of pod `name`, once a watch of pods has seen it end."""

    def ended(pod: dict) -> tuple[int] | None:
        code = exit_code(pod, name, container)
        return None if code is None else (code,)  # a tuple: exit code 0 is an answer too

    return pods.wait(ended, timeout, f"container {container} of pod {name} to exit")[0]


def exit_code(pod: dict, name: str, container: str) -> int | None:
    """How `container` of pod `name` last ended, if this version of a pod is it and says so."""
    if pod["metadata"]["name"] != name:
        return None
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status["name"] == container:
            for state in (status.get("state"), status.get("lastState")):
                if ended := (state or {}).get("terminated"):
                    return ended["exitCode"]
    return None
