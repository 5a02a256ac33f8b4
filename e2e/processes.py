"""Long-running child processes with a log file each, stopped gently then firmly."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _die_with_parent() -> None:
    # Runs in the child before exec: the kernel kills it if the parent dies, even by SIGKILL, so
    # a crashed test run leaves no control plane behind. SIGKILL, because on SIGTERM all at once
    # the apiserver waits forever for the etcd that went first.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Process:
    name: str
    args: list[str]
    log: Path
    popen: subprocess.Popen | None = field(default=None, repr=False)

    def start(self, die_with_parent: bool) -> None:
        with self.log.open("ab") as log:
            self.popen = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal reaches us, not them
                preexec_fn=_die_with_parent if die_with_parent else None,
            )

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was not started"
        return self.popen.pid

    def exited(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def log_tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def stop_pid(pid: int, grace: float = 10.0) -> None:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL; a pid that is gone already is fine."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not running(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while running(pid):
        time.sleep(0.05)


def running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie (whoever adopted it reaps it in its own time)."""
    try:
        # Reap it if it is our child; otherwise just ask whether it exists.
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return _state(pid) != "Z"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return "X"


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, failed: Callable[[], str | None]
) -> None:
    """Poll `check` until true. `failed` returns a reason to give up early (a process died)."""
    deadline = time.monotonic() + timeout
    while True:
        reason = failed()
        if reason:
            raise TimeoutError(f"{what}: {reason}")
        if check():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not done after {timeout:.0f} s")
        time.sleep(0.2)
