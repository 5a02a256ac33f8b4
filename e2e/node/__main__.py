"""`python -m e2e.node [pytest args]`: the real-node tier (`make e2e-node`).

On the host: check the prerequisites (installing Debian's packages with --install-missing),
build or reuse the binaries and the images, record what the run will change on the host, then
run pytest as the child of e2e/node/init.py in fresh network, mount and PID namespaces. When it
ends, however it ends, put the host back (e2e/node/host.py says what that covers).
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time

from e2e import build
from e2e.node import host, images, prerequisites
from e2e.node.settings import ENV, RunSettings, containerd_root, node_cache

TESTS = "e2e/node"


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def pytest_args(argv: list[str]) -> list[str]:
    """The tier's tests, unless the arguments name some of them; options pass through."""
    if not argv:
        return [TESTS, "-q"]
    return argv if any(arg.startswith(TESTS) for arg in argv) else [TESTS, *argv]


def main(argv: list[str]) -> int:
    if argv[:1] == ["--install-missing"]:
        prerequisites.install_missing(log)
        argv = argv[1:]
    problems = prerequisites.problems()
    if problems:
        log("e2e-node cannot run: " + "; ".join(problems))
        return 2
    cache = node_cache()
    cache.mkdir(parents=True, exist_ok=True)
    lock = (cache / "run.lock").open("w")
    try:
        # One run at a time: runs share the host state file and containerd's root.
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log(f"e2e-node cannot run: another run holds {lock.name}; wait for it to end")
        return 2
    started = time.monotonic()
    bin_dir = build.ensure_binaries(log=log)
    built = images.ensure_images(log)
    log(f"e2e-node: binaries and images ready in {time.monotonic() - started:.0f} s")

    state_file = cache / "host-state.json"
    workdir = cache / f"run-{os.getpid()}"
    log(host.describe_changes())
    host.prepare(state_file, workdir, log)
    settings = RunSettings(
        bin_dir=str(bin_dir),
        workdir=str(workdir),
        containerd_root=str(containerd_root()),
        images=built,
    )
    command = [
        "unshare", "--net", "--mount", "--pid", "--fork", "--mount-proc",
        "--propagation", "private", "--",
        sys.executable, "-m", "e2e.node.init", "--",
        sys.executable, "-m", "pytest", *pytest_args(argv),
    ]  # fmt: skip
    try:
        env = {**os.environ, ENV: json.dumps(settings.model_dump())}
        return subprocess.run(command, env=env).returncode
    except KeyboardInterrupt:
        return 130
    finally:
        host.restore(state_file, log)
        log("e2e-node: the host is as it was before the run")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
