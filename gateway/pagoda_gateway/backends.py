"""The worker pods the gateway may send to, by role, and what it knows of their load.

Roles: `active` is the tier the operator says serves; `standby` the other one, used at once
when no active pod is ready (the gateway closes the promotion window; the operator still
decides which tier is which). A backend that refused a connection is ejected for a few seconds,
until discovery or its recovery catches up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Literal

Role = Literal["active", "standby"]
ROLES: tuple[Role, ...] = ("active", "standby")
EJECT_S = 5.0


@dataclass(frozen=True)
class Backend:
    name: str  # the pod's name (host:port for a static backend): the x-pagoda-backend header
    url: str  # http://address:port


@dataclass
class BackendLoad:
    """Gauges scraped from the backend's /metrics (load_scraper.py)."""

    waiting: float = 0.0
    kv_usage: float = 0.0


class BackendPool:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._ready: dict[Role, list[Backend]] = {role: [] for role in ROLES}
        self._ejected_until: dict[str, float] = {}
        self.in_flight: dict[str, int] = {}
        self.loads: dict[str, BackendLoad] = {}
        self._changed = asyncio.Event()

    def set_ready(self, role: Role, backends: list[Backend]) -> None:
        backends = sorted(backends, key=lambda b: b.name)
        if backends == self._ready[role]:
            return
        self._ready[role] = backends
        names = {b.name for r in ROLES for b in self._ready[r]}
        self.loads = {n: load for n, load in self.loads.items() if n in names}
        self._wake()

    def ready(self, role: Role) -> list[Backend]:
        return list(self._ready[role])

    def all_ready(self) -> list[Backend]:
        return [b for role in ROLES for b in self._ready[role]]

    def eject(self, backend: Backend, seconds: float = EJECT_S) -> None:
        self._ejected_until[backend.name] = self._clock() + seconds

    def candidates(
        self, exclude: AbstractSet[str] = frozenset()
    ) -> tuple[Role | None, list[Backend]]:
        """The ready backends of the first role that has any, less ejected and excluded ones."""
        now = self._clock()
        self._ejected_until = {n: t for n, t in self._ejected_until.items() if t > now}
        for role in ROLES:
            usable = [
                b
                for b in self._ready[role]
                if b.name not in self._ejected_until and b.name not in exclude
            ]
            if usable:
                return role, usable
        return None, []

    def next_unejection_in(self) -> float | None:
        """Seconds until the next ejected backend may be tried again, if any is ejected."""
        if not self._ejected_until:
            return None
        return max(0.0, min(self._ejected_until.values()) - self._clock())

    def load(self, backend: Backend) -> float:
        """This gateway's requests in flight there, plus what waits there from anyone, plus its
        KV-cache usage (0 to 1): between pods with as many requests, the emptier cache wins, and
        a full one counts as one more request in line."""
        scraped = self.loads.get(backend.name) or BackendLoad()
        return self.in_flight.get(backend.name, 0) + scraped.waiting + scraped.kv_usage

    def started(self, backend: Backend) -> None:
        self.in_flight[backend.name] = self.in_flight.get(backend.name, 0) + 1

    def finished(self, backend: Backend) -> None:
        left = self.in_flight.get(backend.name, 1) - 1
        if left:
            self.in_flight[backend.name] = left
        else:
            self.in_flight.pop(backend.name, None)
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for_change(self, timeout: float) -> None:
        """Returns when the ready set changes, or after `timeout` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)
