"""docker/worker.Dockerfile and the registry-free build make the same image: the same Debian
packages, the same lock, and the same runtime settings (environment, user, port, command)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from images import worker

DOCKERFILE = Path(__file__).resolve().parents[2] / "docker/worker.Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined and comments dropped."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [tuple(line.split(maxsplit=1)) for line in joined.splitlines() if line.strip()]


def test_the_runtime_settings_are_the_same():
    env, config = [], {}
    for instruction, arguments in instructions():
        if instruction == "ENV":
            env += shlex.split(arguments)
        elif instruction == "USER":
            config["User"] = arguments
        elif instruction == "EXPOSE":
            config["ExposedPorts"] = {f"{port}/tcp": {} for port in arguments.split()}
        elif instruction in ("CMD", "ENTRYPOINT"):
            config[instruction.title()] = json.loads(arguments)
    assert {**config, "Env": env} == worker.CONFIG


def test_the_same_debian_packages_and_lock_are_installed():
    runs = " ".join(arguments for instruction, arguments in instructions() if instruction == "RUN")
    installed = re.search(r"apt-get install -y --no-install-recommends ([^&]+)", runs)
    assert installed is not None and installed[1].split() == worker.PACKAGES
    assert f"--require-hashes -r /tmp/{worker.LOCK.name}" in runs
    assert ("FROM", f"debian:{worker.SUITE}-slim") in instructions()
