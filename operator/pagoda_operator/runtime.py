"""The operator's moving parts between kopf's watch events and `reconcile`: a work queue, a few
workers, retries with backoff, deadline wake-ups and a slow resync."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from . import metrics
from .kube_client import KubeClient, StatusConflict
from .peering import PeeringGate
from .reconciler import ChildrenRejected, reconcile
from .workqueue import WorkQueue

log = logging.getLogger(__name__)
Key = tuple[str, str]  # namespace, name


class Runtime:
    def __init__(self, kube: KubeClient, gate: PeeringGate, workers: int, resync_seconds: float):
        self.kube = kube
        self.gate = gate
        self.workers = workers
        self.resync_seconds = resync_seconds
        self.known: set[Key] = set()
        self._failures: Counter[Key] = Counter()
        self._tasks: list[asyncio.Task] = []
        # No event loop needed yet: an asyncio queue binds to the loop that first waits on it.
        self.queue: WorkQueue[Key] = WorkQueue()

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self.workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def llmdeployment_changed(self, namespace: str, name: str, deleted: bool) -> None:
        key = (namespace, name)
        if deleted:
            self.known.discard(key)
        else:
            self.known.add(key)
        self._enqueue(key)

    def child_changed(self, namespace: str, owner: str) -> None:
        self._enqueue((namespace, owner))

    def namespace_changed(self, namespace: str) -> None:
        """Something every LLMDeployment of the namespace depends on changed (its GPU quota)."""
        for key in [k for k in self.known if k[0] == namespace]:
            self._enqueue(key)

    def _enqueue(self, key: Key) -> None:
        self.queue.add(key)
        metrics.QUEUE_DEPTH.set(len(self.queue))

    async def _work(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                await self._reconcile(key)
            finally:
                self.queue.done(key)
                metrics.QUEUE_DEPTH.set(len(self.queue))

    async def _reconcile(self, key: Key) -> None:
        try:  # reading the peers can fail too: retried like a failed reconcile, never fatal
            active = await asyncio.to_thread(self.gate.active)
            metrics.ACTIVE.set(1 if active else 0)
            if not active:
                return  # paused by a peer; kopf lists everything again when it resumes us
            wake = await asyncio.to_thread(reconcile, self.kube, *key)
        except StatusConflict:
            metrics.RECONCILES.labels("conflict").inc()
            self.queue.add(key)  # changed meanwhile: again, with the fresh object
        except ChildrenRejected as refused:
            metrics.RECONCILES.labels("rejected").inc()
            delay = self._backoff(key)
            log.warning("%s/%s: %s; retrying in %.1fs", *key, refused, delay)
            self.queue.add(key, delay)
        except Exception:
            metrics.RECONCILES.labels("error").inc()
            delay = self._backoff(key)
            log.exception("reconciling %s/%s failed; retrying in %.1fs", *key, delay)
            self.queue.add(key, delay)
        else:
            metrics.RECONCILES.labels("ok").inc()
            self._failures.pop(key, None)
            if key in self.known or wake is not None:
                self.queue.add(key, min(wake or self.resync_seconds, self.resync_seconds))

    def _backoff(self, key: Key) -> float:
        self._failures[key] += 1
        return min(0.5 * 2 ** (self._failures[key] - 1), 60.0)
