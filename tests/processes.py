"""`pagoda serve` and `pagoda gateway` as real processes on loopback, for the tests that need a
process of their own (signals, kills, logs)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

# The line each command prints once it listens, with its base URL.
LISTENING = re.compile(r"(?:probes answer on|gateway listening on) (http://[\d.]+:\d+)")


@dataclass
class Started:
    proc: subprocess.Popen
    url: str
    log: list[str] = field(default_factory=list)  # stderr, line by line, as it arrives

    def stop(self, timeout_s: float = 30) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_pagoda(*argv: str, env: dict[str, str] | None = None) -> Started:
    """Starts `pagoda <argv>` (with --port 0 among them) and returns once it listens; its log
    keeps being read so it never blocks."""
    command = [sys.executable, "-m", "pagoda.cli", *argv]
    proc = subprocess.Popen(
        command, stderr=subprocess.PIPE, text=True, env=os.environ | (env or {})
    )
    log: list[str] = []
    for line in proc.stderr:
        log.append(line)
        if found := LISTENING.search(line):
            threading.Thread(target=_keep_reading, args=(proc, log), daemon=True).start()
            return Started(proc, found.group(1), log)
    raise AssertionError(f"pagoda {argv[0]} did not start (exit {proc.wait()}):\n{''.join(log)}")


def _keep_reading(proc: subprocess.Popen, log: list[str]) -> None:
    for line in proc.stderr:
        log.append(line)


def start_serve(*argv: str, env: dict[str, str] | None = None) -> Started:
    return start_pagoda("serve", "--port", "0", *argv, env=env)


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def wait_ready(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while get(url + "/ready")[0] != 200:
        assert time.monotonic() < deadline, "never became ready"
        time.sleep(0.1)
