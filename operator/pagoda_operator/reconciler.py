"""One reconciliation: read the world, plan, act. Blocking calls; the operator runs it in a
thread per key."""

from __future__ import annotations

import logging

from . import metrics
from .kube_client import ChildRejected, KubeClient
from .plan import plan
from .rejection import Rejection

log = logging.getLogger(__name__)


class ChildrenRejected(Exception):
    """The apiserver refused children; status and a Warning Event say so. Retried with backoff
    (an admission webhook may change its mind), and at once when the spec changes."""

    def __init__(self, rejections: list[Rejection]):
        super().__init__("; ".join(f"{r.kind} {r.name}: {r.message}" for r in rejections))


def reconcile(kube: KubeClient, namespace: str, name: str) -> float | None:
    """Bring one LLMDeployment's children and status in line with its spec. Returns when it
    must be looked at again even if nothing changes (a fallback deadline), or None. Raises
    ChildrenRejected, after writing the status that says so, when a child was refused."""
    with metrics.RECONCILE_SECONDS.time():
        world = kube.read_world(namespace, name)
        if world is None:
            metrics.forget(namespace, name)
            return None
        if world.resource["metadata"].get("deletionTimestamp"):
            return None  # being deleted: the garbage collector takes the children
        result = plan(world)
        rejections = []
        for obj in result.apply:
            try:
                kube.apply(obj)
            except ChildRejected as refused:
                rejections.append(refused.rejection)
                continue
            metrics.APPLIES.labels(obj["kind"]).inc()
        if rejections:
            result = plan(world, tuple(rejections))
        for ref in result.delete:
            log.info("deleting %s %s/%s", ref["kind"], namespace, ref["name"])
            kube.delete(namespace, ref)
        if result.status_changed(world.resource.get("status")):
            kube.write_status(world.resource, result.status)
            metrics.STATUS_WRITES.inc()
        # Only after the status is stored: a conflict above recomputes the same transitions.
        for transition in result.transitions:
            kube.post_event(world.resource, transition)
            metrics.EVENTS.labels("Warning" if transition.warning else "Normal").inc()
            log.info(
                "%s/%s %s=%s %s: %s",
                namespace,
                name,
                transition.type,
                transition.status,
                transition.reason,
                transition.message,
            )
        metrics.record_status(namespace, name, result.status)
        if rejections:
            raise ChildrenRejected(rejections)
        return result.requeue_after
