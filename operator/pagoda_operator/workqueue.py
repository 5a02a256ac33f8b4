"""Keys waiting to be reconciled, in the shape of client-go's work queue: a key is queued at most
once, never handed to two workers at once, and a key that changes while it is being worked on is
queued again when the worker is done."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self) -> None:
        self._ready: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._working: set[K] = set()
        self._dirty: set[K] = set()
        self._timers: dict[K, asyncio.TimerHandle] = {}

    def add(self, key: K, delay: float = 0.0) -> None:
        """Queue `key` now, or after `delay` seconds (an earlier pending delay wins)."""
        if delay > 0:
            loop = asyncio.get_running_loop()
            timer = self._timers.get(key)
            if timer is not None and timer.when() <= loop.time() + delay:
                return
            if timer is not None:
                timer.cancel()
            self._timers[key] = loop.call_later(delay, self._fire, key)
            return
        if key in self._working:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._ready.put_nowait(key)

    async def get(self) -> K:
        key = await self._ready.get()
        self._queued.discard(key)
        self._working.add(key)
        return key

    def done(self, key: K) -> None:
        self._working.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def __len__(self) -> int:
        return len(self._queued)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)
