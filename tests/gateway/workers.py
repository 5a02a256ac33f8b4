"""Real `pagoda serve` workers for the gateway tests: started side by side on loopback, with test
faults (to slow or wedge their engine on demand) and an API key the gateway must present."""

from __future__ import annotations

import concurrent.futures
import json
import urllib.request
from pathlib import Path

from tests.processes import Started, start_serve, wait_ready

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
