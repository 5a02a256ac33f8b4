"""The real-node tier's fixtures: `cluster` is the control plane plus one kubelet node here
(the operator and namespace fixtures of e2e/conftest.py work unchanged on it)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.conftest import LOG_DIR_KEY
from e2e.local_cluster import LocalCluster
from e2e.node import settings
from e2e.node.cluster import start_node_cluster

RUN = settings.current()


def pytest_configure(config: pytest.Config) -> None:
    if RUN is None:
        raise pytest.UsageError(
            "the real-node tests run inside namespaces of their own: `make e2e-node`"
            " (or `python -m e2e.node [pytest args]`)"
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Real pods start in seconds and roll out in minutes: more than the other tiers' 300 s.
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.timeout(600))


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    capture = request.config.pluginmanager.get_plugin("capturemanager")

    def progress(line: str) -> None:
        with capture.global_and_fixture_disabled():  # the run's timings, shown as they come
            print(line, file=sys.stderr, flush=True)

    plane, node, handle = start_node_cluster(f"node-{os.getpid()}", RUN, log=progress)
    request.config.stash[LOG_DIR_KEY] = plane.log_dir
    yield handle
    node.stop()
    plane.stop()
    if not request.session.testsfailed:
        shutil.rmtree(plane.log_dir.parent, ignore_errors=True)  # logs are kept for failures
