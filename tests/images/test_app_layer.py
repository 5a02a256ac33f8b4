"""The app layer: the project's wheel, built offline and reproducibly (its hash keys the layer),
installed into the image's venv with a working `pagoda` script and the default model inside."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from images import wheels
from images.worker import PYTHON, REPO, VENV

pytestmark = pytest.mark.timeout(240)
SITE = f"{VENV}/lib/python{PYTHON}/site-packages"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    first = wheels.build_project_wheel(REPO, tmp / "first", tmp / "first.log")
    again = wheels.build_project_wheel(REPO, tmp / "again", tmp / "again.log")
    assert first.read_bytes() == again.read_bytes(), "the same files must give the same wheel"
    return first


def test_the_wheel_installs_a_pagoda_script_for_the_venv_and_the_model(wheel, tmp_path):
    wheels.install_wheel(wheel, tmp_path, VENV, PYTHON)
    script = tmp_path / VENV.lstrip("/") / "bin/pagoda"
    site = tmp_path / SITE.lstrip("/")
    assert script.read_text().startswith(f"#!{VENV}/bin/python\n")
    assert os.access(script, os.X_OK)
    assert (site / "pagoda_worker/default_model/stories260K/model.safetensors").is_file()

    help_text = subprocess.run(
        [sys.executable, script, "--help"], env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "Serve LLMs on Kubernetes" in help_text


def test_the_bytecode_checks_hashes_not_mtimes(wheel, tmp_path):
    """The layer gives every file one fixed mtime: mtime-checked .pyc files would all be stale."""
    wheels.install_wheel(wheel, tmp_path, VENV, PYTHON)
    site = tmp_path / SITE.lstrip("/")
    pyc = importlib.util.cache_from_source(str(site / "pagoda/cli.py"))
    flags = int.from_bytes(Path(pyc).read_bytes()[4:8], "little")
    assert flags == 0b11  # hash-based, checked against the source
