"""The real-node tier names what is missing, and the package that brings it, before it starts."""

from __future__ import annotations

import pytest

from e2e.node import prerequisites


def test_a_missing_runtime_is_named_with_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prerequisites.os, "geteuid", lambda: 0)
    monkeypatch.setattr(prerequisites, "cgroup_hierarchies", lambda: ["/sys/fs/cgroup/cpu"])
    gone = {"containerd", "ctr", "runc"}  # everything else is there
    monkeypatch.setattr(
        prerequisites.shutil, "which", lambda name: None if name in gone else f"/usr/bin/{name}"
    )
    monkeypatch.setattr(prerequisites.Path, "exists", lambda path: True)
    [problem] = [p for p in prerequisites.problems() if p.startswith("missing")]
    assert problem == "missing containerd, ctr, runc: apt-get install containerd runc"


def test_not_root_is_said_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prerequisites.os, "geteuid", lambda: 1000)
    assert prerequisites.problems()[0].startswith("it must run as root")
