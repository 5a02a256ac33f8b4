"""The `uri` and `hf` model sources for real: the fetch-model init container downloads from a
server in the test's own namespace (a tar of the default model over HTTP, and a Hugging Face Hub
stand-in), and a wrong checksum or URL ends up in status in words."""

from __future__ import annotations

import hashlib
import io
import tarfile

import pytest

from e2e.local_cluster import LocalCluster
from e2e.node.support import (
    MODEL_DIR,
    SMALL,
    TEST_FAULTS,
    node_folder,
    ready_pods,
    service_url,
    stream_completion,
)
from e2e.operator_support import REPO, condition, wait_condition

FAKE_HUB = REPO / "tests" / "models" / "fake_hub.py"
HUB_REPO = "pagoda/stories260K"


def model_tar() -> bytes:
    """The default model's folder as a tar whose top level is the folder's contents."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path in sorted(MODEL_DIR.iterdir()):
            info = archive.gettarinfo(path, arcname=path.name)
            info.uid = info.gid = 0
            info.mtime = 0
            with path.open("rb") as f:
                archive.addfile(info, f)
    return buffer.getvalue()


@pytest.fixture
def model_server(cluster: LocalCluster, namespace: str) -> tuple[str, str, str]:
    """One pod in the test's namespace: the tar over plain HTTP on 8080, the Hub stand-in on
    8081. Returns the tar's URL, its sha256, and the Hub's endpoint, both through a Service."""
    files = node_folder(namespace, "files")
    data = model_tar()
    (files / "stories260K.tar").write_bytes(data)
    (files / "stories260K.tar").chmod(0o644)
    cluster.kubectl("create", "configmap", "fake-hub", f"-n={namespace}", f"--from-file={FAKE_HUB}")
    image = "docker.io/library/pagoda-worker:0.1.0"
    package_model = (
        "/opt/pagoda/lib/python3.11/site-packages/pagoda_worker/default_model/stories260K"
    )
    containers = [
        {
            "name": "files",
            "command": ["python3", "-m", "http.server", "8080", "--directory", "/srv/files"],
            "ports": [{"containerPort": 8080}],
        },
        {
            "name": "hub",
            "command": ["python3", "/srv/code/fake_hub.py", package_model, "8081", HUB_REPO],
            "ports": [{"containerPort": 8081}],
        },
    ]
    for container in containers:
        container.update(
            image=image,
            imagePullPolicy="Never",
            volumeMounts=[
                {"name": "files", "mountPath": "/srv/files", "readOnly": True},
                {"name": "code", "mountPath": "/srv/code", "readOnly": True},
            ],
            readinessProbe={"tcpSocket": {"port": container["ports"][0]["containerPort"]}},
        )
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "models", "labels": {"app": "models"}},
            "spec": {
                "containers": containers,
                "volumes": [
                    {"name": "files", "hostPath": {"path": str(files), "type": "Directory"}},
                    {"name": "code", "configMap": {"name": "fake-hub"}},
                ],
                "terminationGracePeriodSeconds": 1,
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "models"},
            "spec": {
                "selector": {"app": "models"},
                "ports": [
                    {"name": "files", "port": 80, "targetPort": 8080},
                    {"name": "hub", "port": 81, "targetPort": 8081},
                ],
            },
        },
        namespace=namespace,
    )
    cluster.wait_pod_ready("models", namespace, timeout=120)
    address = cluster.get("service", "models", namespace)["spec"]["clusterIP"]
    tar_url = f"http://{address}/stories260K.tar"
    return tar_url, hashlib.sha256(data).hexdigest(), f"http://{address}:81"


def llmdeployment(name: str, source: dict, env: list[dict] | None = None) -> dict:
    return {
        "apiVersion": "pagoda.dev/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "stories260K", "source": source},
            "imagePullPolicy": "Never",
            "env": [TEST_FAULTS, *(env or [])],
            "resources": SMALL,
            "engine": {"dtype": "float32", "maxModelLen": 512, "maxNumSeqs": 4},
            "serving": {"startupTimeoutSeconds": 180, "terminationGracePeriodSeconds": 10},
        },
    }


def test_uri_and_hf_sources_download_and_serve(
    cluster: LocalCluster, namespace: str, operator, model_server
) -> None:
    uri, sha256, hub = model_server
    cluster.apply(
        llmdeployment("from-uri", {"uri": uri, "sha256": sha256}),
        llmdeployment(
            "from-hf", {"hf": {"repo": HUB_REPO}}, env=[{"name": "HF_ENDPOINT", "value": hub}]
        ),
        namespace=namespace,
    )
    for name in ("from-uri", "from-hf"):
        wait_condition(cluster, namespace, name, "Ready", "True", timeout=240)
        served = stream_completion(service_url(cluster, namespace, name), max_tokens=16)
        assert served.clean and served.text, (name, served)
    texts = {
        stream_completion(service_url(cluster, namespace, n), max_tokens=16).text
        for n in ("from-uri", "from-hf")
    }
    assert len(texts) == 1, "the same weights, wherever they came from"


def test_a_wrong_checksum_or_url_is_reported_in_words(
    cluster: LocalCluster, namespace: str, operator, model_server
) -> None:
    uri, _, _ = model_server
    wrong = "0" * 64
    cluster.apply(
        llmdeployment("bad-sum", {"uri": uri, "sha256": wrong}),
        llmdeployment("bad-url", {"uri": uri.replace("stories260K", "nothing-here")}),
        namespace=namespace,
    )
    for name, says in (("bad-sum", wrong), ("bad-url", "404")):
        degraded = cluster.wait_for(
            lambda name=name, says=says: (
                (found := condition(cluster, namespace, name, "Degraded")).get("status") == "True"
                and says in found.get("message", "")
                and found
            ),
            timeout=180,
            what=f"{name}: Degraded to say why the download failed",
        )
        assert "fetch-model" in degraded["message"], degraded
        assert not ready_pods(cluster, namespace), "nothing serves a model it could not fetch"
