"""The fetch-model init container of a `source.uri` model, run for real: its shell command and
environment as rendered, against an HTTP server on 127.0.0.1. What it prints last is what the
kubelet copies into the termination message, and status quotes."""

from __future__ import annotations

import functools
import hashlib
import io
import shutil
import subprocess
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pagoda_operator.api.spec import LLMDeploymentSpec
from pagoda_operator.naming import Owner
from pagoda_operator.revision import primary_config
from pagoda_operator.workload import pod_template

pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("sh", "curl", "sha256sum", "tar")),
    reason="the init container's tools (sh, curl, sha256sum, tar) are not installed",
)

FILES = {"config.json": b'{"model_type": "llama"}', "model.safetensors": b"\0" * 1000}


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args) -> None:
        pass


@pytest.fixture(scope="module")
def archive_server(tmp_path_factory):
    """Serves model.tar (FILES at its top level) on 127.0.0.1; yields (base URL, sha256)."""
    root = tmp_path_factory.mktemp("served")
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name, content in FILES.items():
            member = tarfile.TarInfo(name)
            member.size = len(content)
            tar.addfile(member, io.BytesIO(content))
    (root / "model.tar").write_bytes(data.getvalue())
    handler = functools.partial(_QuietHandler, directory=str(root))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        yield f"http://127.0.0.1:{server.server_port}", hashlib.sha256(data.getvalue()).hexdigest()
        server.shutdown()


def fetch(source: dict, scratch: Path) -> tuple[subprocess.CompletedProcess, Path]:
    """Run the rendered fetch-model container with its volumes moved under `scratch`."""
    spec = LLMDeploymentSpec.model_validate({"model": {"name": "m", "source": source}})
    [init] = pod_template(Owner("team", "demo", "uid-1"), primary_config(spec))["spec"][
        "initContainers"
    ]
    target = scratch / "models" / "model"
    env = {e["name"]: e["value"] for e in init["env"]}
    assert env["TARGET"] == "/models/model"
    env |= {"TARGET": str(target), "HOME": str(scratch), "TMPDIR": str(scratch)}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    done = subprocess.run(init["command"], env=env, capture_output=True, text=True, timeout=60)
    return done, target


def last_lines(done: subprocess.CompletedProcess, count: int) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.strip()][-count:]


def test_downloads_and_unpacks_the_archive(archive_server, tmp_path):
    url, _ = archive_server
    done, target = fetch({"uri": f"{url}/model.tar"}, tmp_path)
    assert done.returncode == 0, done.stderr
    assert {p.name: p.read_bytes() for p in target.iterdir()} == FILES
    assert not (tmp_path / "model.tar").exists(), "the archive is removed once unpacked"


def test_a_matching_checksum_passes(archive_server, tmp_path):
    url, digest = archive_server
    done, target = fetch({"uri": f"{url}/model.tar", "sha256": digest}, tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in target.iterdir()) == sorted(FILES)


def test_a_wrong_checksum_fails_before_unpacking_and_says_both_sums(archive_server, tmp_path):
    url, digest = archive_server
    wrong = "0" * 64
    done, target = fetch({"uri": f"{url}/model.tar", "sha256": wrong}, tmp_path)
    assert done.returncode == 1
    assert last_lines(done, 1) == [
        f"fetch-model: checksum of {url}/model.tar did not match: expected {wrong}, got {digest}"
    ]
    assert not any(target.iterdir()), "nothing unpacked"


def test_a_missing_archive_names_the_url(archive_server, tmp_path):
    url, _ = archive_server
    done, _ = fetch({"uri": f"{url}/missing.tar"}, tmp_path)
    assert done.returncode == 22  # curl -f: an HTTP error
    curl_said, we_said = last_lines(done, 2)
    assert curl_said.startswith("curl: (22) The requested URL returned error: 404")
    assert we_said == f"fetch-model: downloading {url}/missing.tar failed (curl exit code 22)"
