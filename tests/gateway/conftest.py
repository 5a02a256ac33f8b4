"""Real `pagoda serve` workers on loopback behind a real `pagoda gateway`, all as processes.

The workers run with test faults (to slow or wedge their engine on demand) and an API key the
gateway must present; tenants have keys and limits of their own.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.gateway.workers import TENANT_KEYS, WORKER_KEY, start_workers
from tests.processes import Started, start_pagoda, wait_ready


@pytest.fixture(scope="session")
def worker_key_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("worker") / "key"
    path.write_text(WORKER_KEY + "\n")
    return path


@pytest.fixture(scope="session")
def tenants_file(tmp_path_factory) -> Path:
    """alpha: 3 requests a minute; beta: one request at a time; gamma: 300 tokens a minute
    (its key given as a digest)."""
    folder = tmp_path_factory.mktemp("tenants")
    (folder / "alpha").write_text(TENANT_KEYS["alpha"])
    (folder / "beta").write_text(TENANT_KEYS["beta"])
    gamma = hashlib.sha256(TENANT_KEYS["gamma"].encode()).hexdigest()
    path = folder / "tenants.yaml"
    path.write_text(
        f"""tenants:
- name: alpha
  keyFile: {folder / "alpha"}
  requestsPerMinute: 3
- name: beta
  keyFile: {folder / "beta"}
  concurrentRequests: 1
- name: gamma
  keySha256: {gamma}
  tokensPerMinute: 300
"""
    )
    return path


@pytest.fixture(scope="session")
def workers(worker_key_file) -> list[Started]:
    """Two workers shared by the tests that do not kill them (faults are reset after use)."""
    started = start_workers(2, worker_key_file)
    yield started
    for worker in started:
        worker.stop()


@pytest.fixture
def make_gateway(worker_key_file):
    """make_gateway(backends, *flags) -> the gateway, stopped after the test."""
    started: list[Started] = []

    def make(backends: list[str], *flags: str, standby: list[str] = ()) -> Started:
        argv = ["gateway", "--port", "0", "--backend-api-key-file", str(worker_key_file)]
        argv += [arg for url in backends for arg in ("--backend", url)]
        argv += [arg for url in standby for arg in ("--standby-backend", url)]
        gateway = start_pagoda(*argv, *flags)
        started.append(gateway)
        wait_ready(gateway.url)
        return gateway

    yield make
    for gateway in started:
        gateway.stop()
