"""`python -m e2e.cluster up|down` as a person runs it: a working cluster, then nothing left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from e2e.cluster import state_file
from e2e.control_plane import E2E_DIR, WORK_DIR
from e2e.processes import running

NAME = "lifecycle-test"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "e2e.cluster", *args, f"--name={NAME}"],
        cwd=E2E_DIR.parent,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_up_serves_kubectl_and_down_leaves_no_process_or_temp_folder() -> None:
    up = cli("up")
    assert up.returncode == 0, up.stderr
    state = json.loads(state_file(NAME).read_text())
    try:
        exports = dict(
            line.removeprefix("export ").split(" ")[0].split("=", 1)
            for line in up.stdout.splitlines()
        )
        kubectl = Path(exports["PATH"].split(":")[0]) / "kubectl"
        nodes = subprocess.run(
            [str(kubectl), "get", "nodes", "-o", "name"],
            env={**os.environ, "KUBECONFIG": exports["KUBECONFIG"]},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert "node/gpu-node-0" in nodes
        assert cli("up").returncode == 1  # a second `up` of the same name is refused
    finally:
        down = cli("down")

    assert down.returncode == 0, down.stderr
    assert not state_file(NAME).exists()
    assert not Path(state["workdir"]).exists()
    for entry in state["processes"]:
        assert not running(entry["pid"]), f"{entry['binary']} still runs"
    assert (WORK_DIR / NAME / "logs" / "kube-apiserver.log").stat().st_size > 0
