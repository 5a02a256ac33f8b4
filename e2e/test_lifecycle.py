"""`python -m e2e.cluster up|down` as a person runs it: a working cluster, then nothing left."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from e2e.cluster import state_file
from e2e.control_plane import E2E_DIR, WORK_DIR, ControlPlane, ControlPlaneError
from e2e.processes import running

NAME = f"lifecycle-test-{os.getpid()}"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "e2e.cluster", *args, f"--name={NAME}"],
        cwd=E2E_DIR.parent,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_up_serves_kubectl_and_down_leaves_no_process_or_temp_folder(bin_dir: Path) -> None:
    started = time.monotonic()
    up = cli("up")
    warm_start = time.monotonic() - started
    assert up.returncode == 0, up.stderr
    assert warm_start < 30, f"warm start took {warm_start:.1f} s"
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
    shutil.rmtree(WORK_DIR / NAME)


ORPHAN_SCRIPT = """
import json, sys, time
from e2e.cluster import start_cluster
plane, _ = start_cluster(sys.argv[1], log=lambda line: None)
print(json.dumps({"pids": [p.pid for p in plane.processes], "workdir": str(plane.workdir)}))
time.sleep(600)
"""


def test_components_die_when_the_process_that_started_them_is_killed(bin_dir: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_SCRIPT, f"orphan-test-{os.getpid()}"],
        cwd=E2E_DIR.parent,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        started = json.loads(parent.stdout.readline())
    finally:
        parent.kill()  # SIGKILL: no cleanup code of ours runs
        parent.wait()
    try:
        deadline = time.monotonic() + 15
        while any(running(pid) for pid in started["pids"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(running(pid) for pid in started["pids"])
    finally:
        shutil.rmtree(started["workdir"], ignore_errors=True)
        shutil.rmtree(WORK_DIR / f"orphan-test-{os.getpid()}", ignore_errors=True)


def test_a_component_that_dies_at_start_fails_start_with_its_log(tmp_path: Path) -> None:
    fake_etcd = tmp_path / "etcd"
    fake_etcd.write_text("#!/bin/sh\necho 'etcdmain: listen tcp: address already in use'\nexit 3\n")
    fake_etcd.chmod(0o755)
    plane = ControlPlane(tmp_path, f"failing-{os.getpid()}")

    with pytest.raises(ControlPlaneError) as failed:
        plane.start()

    assert "etcd exited with code 3" in str(failed.value)
    assert "address already in use" in str(failed.value)
    assert plane.workdir is None and plane.processes == []
    shutil.rmtree(plane.log_dir.parent)
