"""Requests that arrive while no worker of either tier is ready wait here (scale from zero, all
pods starting), up to a size and a time; then they get 503 with Retry-After. Its length is a
metric an autoscaler can scale on."""

from __future__ import annotations

import asyncio

from .backends import Backend, BackendPool, Role


class HoldRefused(Exception):
    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class HoldQueue:
    def __init__(self, pool: BackendPool, size: int, timeout_s: float) -> None:
        self.pool = pool
        self.size = size
        self.timeout_s = timeout_s
        self.waiting = 0

    async def backends(self) -> tuple[Role, list[Backend]]:
        """The backends to choose from, waiting for one to become ready if none is."""
        role, found = self.pool.candidates()
        if role is not None:  # a role comes with its backends, never with none
            return role, found
        if self.waiting >= self.size:
            raise HoldRefused(
                f"no worker is ready and {self.waiting} requests already wait for one",
                retry_after_s=max(1, round(self.timeout_s)),
            )
        self.waiting += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        try:
            while (left := deadline - loop.time()) > 0:
                unejected = self.pool.next_unejection_in()
                await self.pool.wait_for_change(left if unejected is None else min(left, unejected))
                role, found = self.pool.candidates()
                if role is not None:
                    return role, found
        finally:
            self.waiting -= 1
        raise HoldRefused(f"no worker became ready within {self.timeout_s:g} s", retry_after_s=1)
