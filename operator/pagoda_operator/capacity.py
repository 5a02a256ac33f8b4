"""Could the fallback's pods be placed at all? Checked against the nodes its nodeSelector allows
while the primary serves, so a fallback that can never start is known before a failover needs
it. Node size only: taints, other pods and the primary's own pods are not counted (the primary's
crash-looping pods make room at a failover, handover.py)."""

from __future__ import annotations

import math

from kubernetes.utils import parse_quantity

from .api.spec import FallbackSpec
from .naming import GPU
from .verdict import Verdict, count


def fallback_fit(fallback: FallbackSpec, nodes: list[dict]) -> Verdict | None:
    """A FallbackWouldNotFit verdict, or None when its pods fit (or need no GPU)."""
    per_pod = fallback.resources.gpus
    if per_pod == 0:
        return None
    wanted = fallback.resources.node_selector
    sizes = [
        _gpus(node)
        for node in nodes
        if wanted.items() <= (node["metadata"].get("labels") or {}).items()
        and not (node.get("spec") or {}).get("unschedulable")
    ]
    where = "nodes matching fallback.resources.nodeSelector" if wanted else "nodes"
    fits = sum(size // per_pod for size in sizes)
    if fits >= fallback.replicas:
        return None
    largest = max(sizes, default=0)
    return Verdict(
        False,
        "FallbackWouldNotFit",
        f"the fallback needs {count(fallback.replicas, 'pod')} x {per_pod} GPUs, but the"
        f" {len(sizes)} {where} can hold {fits} such pods (the largest offers {largest} {GPU}):"
        " lower fallback.resources.gpus or fallback.replicas, or add nodes",
    )


def _gpus(node: dict) -> int:
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    return math.floor(parse_quantity(allocatable.get(GPU, "0")))
