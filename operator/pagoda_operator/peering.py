"""Is this replica the one that works? kopf peering pauses its watches when a peer with a higher
(or equal) priority is alive; delayed work queued before a pause must pause too, so the same rule
is read from the same peering objects."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Peers = dict[str, dict]  # a KopfPeering's status: identity -> {priority, lifetime, lastseen}


def outranked(peers: Peers, identity: str, priority: int, now: datetime) -> bool:
    """Whether another live peer has at least our priority (kopf then pauses us)."""
    for other, info in peers.items():
        if other == identity or not isinstance(info, dict) or "lastseen" not in info:
            continue
        lastseen = datetime.fromisoformat(info["lastseen"])
        if lastseen.tzinfo is None:
            lastseen = lastseen.replace(tzinfo=UTC)
        alive = lastseen + timedelta(seconds=int(info.get("lifetime", 60))) > now
        if alive and int(info.get("priority", 0)) >= priority:
            return True
    return False


class PeeringGate:
    """Caches the answer for `ttl` seconds: reconciles are frequent, peer changes are not."""

    def __init__(
        self,
        read_peers: Callable[[], list[Peers]] | None,
        identity: str,
        priority: int,
        ttl: float = 2.0,
    ):
        self._read_peers = read_peers  # None: standalone, always active
        self._identity = identity
        self._priority = priority
        self._ttl = ttl
        self._checked_at = float("-inf")
        self._active = True

    def active(self) -> bool:
        if self._read_peers is None:
            return True
        if time.monotonic() - self._checked_at >= self._ttl:
            now = datetime.now(UTC)
            self._active = not any(
                outranked(peers, self._identity, self._priority, now)
                for peers in self._read_peers()
            )
            self._checked_at = time.monotonic()
        return self._active
