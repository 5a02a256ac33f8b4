"""docker/worker.lock.txt pins what pyproject.toml asks for: a dependency added or a range moved
without a re-lock fails here (images/README.md: how to re-lock)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", re.MULTILINE)


def locked() -> dict[str, str]:
    text = (REPO / "docker/worker.lock.txt").read_text()
    return {canonicalize_name(name): version for name, version in PIN.findall(text)}


def worker_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [
        Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["worker"]
    ]


def test_every_worker_dependency_is_pinned_within_its_range():
    pins = locked()
    for requirement in worker_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in docker/worker.lock.txt: re-lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"docker/worker.lock.txt pins {name}=={pins[name]}, outside {requirement}: re-lock"
        )


def test_every_pin_carries_a_hash():
    text = (REPO / "docker/worker.lock.txt").read_text()
    entries = re.findall(r"^\S+==.*(?:\n[ \t]+.*)*", text, re.MULTILINE)  # a pin and its hashes
    assert len(entries) == len(locked()) > 0
    assert all("--hash=sha256:" in entry for entry in entries)
