"""The default model ships inside the package: a clone, a wheel and the image serve it with
nothing beside them, from any working directory."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import pytest
from pagoda_worker.models.source import DEFAULT_MODEL

pytestmark = pytest.mark.timeout(240)

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ["NOTICE.md", "config.json", "generation_config.json", "model.safetensors",
           "tokenizer.json", "tokenizer_config.json"]  # fmt: skip
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", ".work", "__pycache__",
                                    ".*_cache", ".hypothesis")  # fmt: skip


def test_the_shipped_model_carries_its_license():
    assert sorted(p.name for p in DEFAULT_MODEL.iterdir()) == sorted(SHIPPED)
    notice = (DEFAULT_MODEL / "NOTICE.md").read_text()
    assert "MIT License" in notice and "Copyright (c) 2023 Andrej Karpathy" in notice


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built offline from a copy of the source tree."""
    root = tmp_path_factory.mktemp("wheel")
    shutil.copytree(REPO, root / "src", ignore=NOT_SOURCE)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(root / "dist"), str(root / "src")],
        check=True, timeout=180,
    )  # fmt: skip
    [built] = (root / "dist").glob("pagoda-*.whl")
    return built


def test_the_wheel_holds_the_model(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"pagoda_worker/default_model/stories260K/{name}" for name in SHIPPED} <= names


def test_the_unpacked_wheel_generates_with_no_model_given(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    script = (
        "import sys, pagoda_worker; from pagoda.cli import main; print(pagoda_worker.__file__); "
        "sys.exit(main(['generate', '--prompt', 'Once upon a time', '--max-tokens', '12']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
        env=os.environ | {"PYTHONPATH": str(site)}, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    loaded_from, text = result.stdout.split("\n", 1)
    assert loaded_from.startswith(str(site))  # not the checkout
    assert text.startswith("Once upon a time, there was a little girl named Lily")


def test_pagoda_serve_with_no_model_serves_stories260k_from_any_folder(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "pagoda.cli", "serve", "--port", "0"],
        cwd=tmp_path, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = None
        for line in proc.stderr:
            if found := re.search(r"ready: serving 'stories260K' at (http://\S+/v1)", line):
                url = found.group(1)
                break
        assert url, "pagoda serve exited before it was ready"
        with urllib.request.urlopen(url + "/models", timeout=10) as response:
            assert [m["id"] for m in json.load(response)["data"]] == ["stories260K"]
        body = {"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 8,
                "temperature": 0}  # fmt: skip
        request = urllib.request.Request(
            url + "/completions", json.dumps(body).encode(), {"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.load(response)["choices"][0]["text"].startswith(", there was a little")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
