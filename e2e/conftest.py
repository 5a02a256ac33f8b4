"""The session-wide `cluster` fixture: a real control plane on 127.0.0.1 (see e2e/README.md)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e import build
from e2e.cluster import start_cluster
from e2e.kube import Cluster

_LOG_REPORT = pytest.StashKey[str]()


def pytest_collection_finish(session: pytest.Session) -> None:
    # A cold build takes many minutes: do it here, outside any test's timeout, and only when a
    # selected test needs the binaries.
    needs = {"cluster", "bin_dir"}
    if any(needs & set(getattr(item, "fixturenames", ())) for item in session.items):
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        build.ensure_binaries(log=reporter.write_line if reporter else print)


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    """The folder with the pinned binaries (built before the tests run)."""
    return build.ensure_binaries()


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    # One name per run, so test runs side by side (a shared checkout) keep their logs apart.
    plane, handle = start_cluster(f"pytest-{os.getpid()}", log=lambda line: None)
    yield handle
    failed = request.session.testsfailed
    if failed:
        request.config.stash[_LOG_REPORT] = plane.log_report(lines=40)
    plane.stop()
    if not failed:
        shutil.rmtree(plane.log_dir.parent, ignore_errors=True)  # logs are kept for failures


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace for one test, deleted (without waiting) afterwards."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    cluster.create_namespace(name)
    yield name
    cluster.delete_namespace(name, wait=False)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    report = config.stash.get(_LOG_REPORT, None)
    if report:
        terminalreporter.write_sep("=", "control plane logs (tails; the full logs are kept)")
        terminalreporter.write_line(report)
