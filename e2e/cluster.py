"""Start and stop the local e2e cluster by hand.

    python -m e2e.cluster up     # build or reuse the binaries, start everything, print KUBECONFIG
    python -m e2e.cluster down   # stop every component and remove the temp folder

`up` leaves the components running after it exits (their pids go to
e2e/.work/<name>/cluster.json, logs beside it); `--name` keeps several clusters apart. The pytest
fixture in e2e/conftest.py uses start_cluster() and ties the processes to the test run instead.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from e2e import build, processes
from e2e.control_plane import WORK_DIR, ControlPlane, ControlPlaneError
from e2e.local_cluster import LocalCluster

GPU_NODES = {"gpu-node-0": 4, "gpu-node-1": 4}


def start_cluster(
    name: str, die_with_parent: bool = True, log: Callable[[str], None] = print
) -> tuple[ControlPlane, LocalCluster]:
    """Build or reuse the binaries, start the control plane and register the fake GPU nodes."""
    bin_dir = build.ensure_binaries(log=log)
    plane = ControlPlane(bin_dir, name, die_with_parent=die_with_parent)
    started = time.monotonic()
    plane.start()
    cluster = LocalCluster(plane.kubeconfig, plane.server, bin_dir / "kubectl")
    try:
        for name, gpus in GPU_NODES.items():
            cluster.add_gpu_node(name, gpus)
    except Exception as error:
        report = plane.log_report()
        plane.stop()
        raise ControlPlaneError(
            f"fake GPU nodes did not become Ready: {error}\n{report}"
        ) from error
    log(f"e2e: cluster up in {time.monotonic() - started:.1f} s at {plane.server}")
    return plane, cluster


def state_file(name: str) -> Path:
    return WORK_DIR / name / "cluster.json"


def up(name: str) -> int:
    if state_file(name).exists():
        print(f"cluster {name!r} is already up; run `python -m e2e.cluster down` first")
        return 1
    plane, cluster = start_cluster(name, die_with_parent=False, log=_stderr)
    state_file(name).write_text(
        json.dumps(
            {
                "server": cluster.server,
                "kubeconfig": str(cluster.kubeconfig),
                "workdir": str(plane.workdir),
                "processes": [{"pid": p.pid, "binary": p.args[0]} for p in plane.processes],
            },
            indent=2,
        )
    )
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    version = build.load_versions().kubernetes
    print(f"export PATH={cluster.kubectl_path.parent}:$PATH  # kubectl {version}")
    return 0


def down(name: str) -> int:
    if not state_file(name).exists():
        print(f"cluster {name!r} is not up")
        return 0
    state = json.loads(state_file(name).read_text())
    for entry in reversed(state["processes"]):
        # Only signal a pid that still runs our binary: pids get reused.
        if _executable(entry["pid"]) == entry["binary"]:
            processes.stop_pid(entry["pid"])
    shutil.rmtree(state["workdir"], ignore_errors=True)
    state_file(name).unlink()
    print("cluster stopped")
    return 0


def _executable(pid: int) -> str | None:
    try:
        return str(Path(f"/proc/{pid}/exe").readlink())
    except OSError:
        return None


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m e2e.cluster", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--name", default="cli", help="which cluster (default: %(default)s)")
    args = parser.parse_args(argv)
    command = args.command
    try:
        return up(args.name) if command == "up" else down(args.name)
    except (build.BuildError, ControlPlaneError, ValueError) as error:
        _stderr(f"e2e cluster {command} failed: {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
