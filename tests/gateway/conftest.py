"""Real `pagoda serve` workers on loopback behind a real `pagoda gateway`, all as processes.

The workers run with test faults (to slow or wedge their engine on demand) and an API key the
gateway must present; tenants have keys and limits of their own.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import urllib.request
from pathlib import Path

import pytest

from tests.processes import Started, start_pagoda, start_serve, wait_ready

WORKER_KEY = "worker-secret"
TENANT_KEYS = {"alpha": "alpha-key", "beta": "beta-key", "gamma": "gamma-key"}


def start_workers(count: int, key_file: Path) -> list[Started]:
    """`count` workers started side by side (each loads stories260K in its engine process)."""
    args = ("--api-key-file", str(key_file), "--canary-interval", "30")
    env = {"PAGODA_TEST_FAULTS": "1"}
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        workers = list(pool.map(lambda _: start_serve(*args, env=env), range(count)))
    for worker in workers:
        wait_ready(worker.url, 120)
    return workers


def set_faults(worker: Started, **faults) -> None:
    request = urllib.request.Request(
        worker.url + "/debug/faults",
        data=json.dumps(faults).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


def backend_name(worker: Started) -> str:
    return worker.url.removeprefix("http://")


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
