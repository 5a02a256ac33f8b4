"""Running build steps: each step's output goes to its own log file, and a failure says which
step failed, shows the end of its log and names the whole log."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path


class BuildError(Exception):
    """A build step failed or a prerequisite is missing; the message names the fix."""


def run_step(args: Sequence[str], log_file: Path, *, env: Mapping[str, str] | None = None) -> None:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("w") as log:
        done = subprocess.run(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-20:])
        raise BuildError(
            f"{args[0]} failed (exit {done.returncode}); the end of its log:\n{tail}\n"
            f"(the whole log: {log_file})"
        )
