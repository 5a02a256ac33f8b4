"""Which backend gets a request: the one holding the longest part of its prompt, else the one
consistent hashing gives its key, each under bounded loads; or round-robin.

Consistent hashing keeps a routing key (a session, a prompt's beginning) on one backend while the
set of backends stays the same, and moves only a few keys when it changes; the bound (KubeAI's
CHWBL, after Mirrokni et al.) skips to the next backend on the ring when the first one already
carries more than `balance` times the average load, so a hot prefix cannot swamp one pod. The
prefix index (prefix_index.py) comes first: a prompt whose beginning a backend already holds goes
there, under the same bound.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
from collections.abc import Callable, Iterator

from .backends import Backend
from .prefix_index import PrefixIndex

VIRTUAL_NODES = 100  # points per backend on the ring: keys spread within a few percent
BALANCE = 1.25
RINGS_KEPT = 16


def key_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


class HashRing:
    def __init__(self, backends: list[Backend]) -> None:
        points = sorted(
            (key_hash(f"{b.name}#{i}"), b) for b in backends for i in range(VIRTUAL_NODES)
        )
        self._hashes = [h for h, _ in points]
        self._backends = [b for _, b in points]

    def walk(self, key: str) -> Iterator[Backend]:
        """Every backend once, clockwise from the key's point."""
        start = bisect.bisect(self._hashes, key_hash(key))
        seen: set[str] = set()
        for i in range(len(self._backends)):
            backend = self._backends[(start + i) % len(self._backends)]
            if backend.name not in seen:
                seen.add(backend.name)
                yield backend


class Router:
    """`prefix`: the longest held prefix, else the key's place on the ring, under bounded loads
    (least loaded when a request has no key). `round-robin`: ignore keys and loads (the
    benchmark's baseline)."""

    def __init__(self, policy: str = "prefix", balance: float = BALANCE) -> None:
        if policy not in ("prefix", "round-robin"):
            raise ValueError(f"unknown routing policy {policy!r}: use prefix or round-robin")
        self.policy = policy
        self.balance = balance
        self._rings: dict[frozenset[str], HashRing] = {}  # a retry's smaller set has its own
        self._turn = itertools.count()
        self.index = PrefixIndex()

    def choose(
        self,
        backends: list[Backend],
        key: str | None,
        load: Callable[[Backend], float],
        blocks: tuple[int, ...] = (),
    ) -> Backend:
        if not backends:
            raise ValueError("no backend to choose from")
        if self.policy == "round-robin":
            ordered = sorted(backends, key=lambda b: b.name)
            return ordered[next(self._turn) % len(ordered)]
        if key is None:
            return min(backends, key=lambda b: (load(b), b.name))
        cap = math.ceil(self.balance * (sum(map(load, backends)) + 1) / len(backends))
        if blocks:
            held = self.index.longest_matches(blocks, {b.name for b in backends})
            holders = sorted(
                (b for b in backends if b.name in held),
                key=lambda b: (-held[b.name], load(b), b.name),
            )
            for backend in holders:
                if load(backend) + 1 <= cap:
                    return backend
        for backend in self._ring_of(backends).walk(key):
            if load(backend) + 1 <= cap:
                return backend
        return min(backends, key=lambda b: (load(b), b.name))  # unreachable with balance >= 1

    def served(self, blocks: tuple[int, ...], backend: Backend) -> None:
        """`backend` answered a prompt of these blocks: it holds them now."""
        if blocks and self.policy == "prefix":
            self.index.remember(blocks, backend.name)

    def _ring_of(self, backends: list[Backend]) -> HashRing:
        names = frozenset(b.name for b in backends)
        if (ring := self._rings.get(names)) is None:
            if len(self._rings) >= RINGS_KEPT:
                self._rings.clear()
            ring = self._rings[names] = HashRing(backends)
        return ring
