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
from e2e.local_cluster import LocalCluster
from e2e.node import settings as node_settings
from e2e.operator_support import Operator, install_crds, remove_crds, running_operator

LOG_DIR_KEY = pytest.StashKey[Path]()  # the control plane's logs, named when a test fails

# The real-node tier runs only inside its own namespaces, through `make e2e-node`.
collect_ignore = [] if node_settings.current() else ["node"]


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
def cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    # One name per run, so test runs side by side (a shared checkout) keep their logs apart.
    plane, handle = start_cluster(f"pytest-{os.getpid()}", log=lambda line: None)
    request.config.stash[LOG_DIR_KEY] = plane.log_dir
    yield handle
    plane.stop()
    if not request.session.testsfailed:
        shutil.rmtree(plane.log_dir.parent, ignore_errors=True)  # logs are kept for failures


@pytest.fixture(scope="module")
def operator(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """The CRDs installed and one standalone operator, for a whole test module."""
    install_crds(cluster)
    with running_operator(cluster, tmp_path_factory.mktemp("operator"), "--standalone") as op:
        yield op
    remove_crds(cluster)


@pytest.fixture
def namespace(cluster: LocalCluster) -> Iterator[str]:
    """A fresh namespace for one test, deleted (without waiting) afterwards."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    cluster.create_namespace(name)
    yield name
    cluster.delete_namespace(name, wait=False)


def _log_files(config: pytest.Config) -> str | None:
    log_dir = config.stash.get(LOG_DIR_KEY, None)
    if log_dir is None:
        return None
    return f"{log_dir}/{{{','.join(sorted(p.name for p in log_dir.glob('*.log')))}}}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failed cluster test names the component logs (kept on failure) instead of printing
    them: its own error stays the last thing it prints."""
    report = yield
    if report.failed and "cluster" in getattr(item, "fixturenames", ()):
        files = _log_files(item.config)
        if files:
            report.sections.append(("control plane logs", files))
    return report


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    files = _log_files(config)
    if files and terminalreporter.stats.get("failed"):
        terminalreporter.write_line(f"control plane logs kept: {files}")
