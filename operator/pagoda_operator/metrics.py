"""Prometheus metrics of the operator and of the LLMDeployments it reconciles."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram

from .api.status import CONDITION_TYPES

RECONCILES = Counter(
    "pagoda_operator_reconciles", "Reconciliations of LLMDeployments, by outcome", ["outcome"]
)
RECONCILE_SECONDS = Histogram(
    "pagoda_operator_reconcile_duration_seconds", "Time to reconcile one LLMDeployment"
)
APPLIES = Counter("pagoda_operator_applies", "Server-side applies of child objects", ["kind"])
STATUS_WRITES = Counter("pagoda_operator_status_writes", "LLMDeployment status updates written")
EVENTS = Counter("pagoda_operator_events", "Kubernetes Events posted, by type", ["type"])
ACTIVE = Gauge("pagoda_operator_active", "1 when this replica is the active peer, 0 when paused")
QUEUE_DEPTH = Gauge("pagoda_operator_queue_depth", "LLMDeployments waiting to be reconciled")
READY_REPLICAS = Gauge(
    "pagoda_llmdeployment_ready_replicas",
    "Ready worker pods per tier",
    ["namespace", "name", "tier"],
)
CONDITION = Gauge(
    "pagoda_llmdeployment_condition",
    "1 when the condition is True",
    ["namespace", "name", "type"],
)
GPUS_REQUESTED = Gauge(
    "pagoda_llmdeployment_gpus_requested",
    "Peak GPUs requested, surge and fallback included",
    ["namespace", "name"],
)


def record_status(namespace: str, name: str, status: dict) -> None:
    READY_REPLICAS.labels(namespace, name, "primary").set(status.get("readyReplicas", 0))
    READY_REPLICAS.labels(namespace, name, "fallback").set(status.get("fallbackReadyReplicas", 0))
    GPUS_REQUESTED.labels(namespace, name).set(status.get("gpus", {}).get("requested", 0))
    for condition in status.get("conditions", []):
        value = 1 if condition["status"] == "True" else 0
        CONDITION.labels(namespace, name, condition["type"]).set(value)


def forget(namespace: str, name: str) -> None:
    """Drop the series of a deleted LLMDeployment."""
    series: list[tuple[Gauge, tuple[str, ...]]] = [(GPUS_REQUESTED, ())]
    series += [(READY_REPLICAS, (tier,)) for tier in ("primary", "fallback")]
    series += [(CONDITION, (kind,)) for kind in CONDITION_TYPES]
    for metric, rest in series:
        with contextlib.suppress(KeyError):  # never recorded
            metric.remove(namespace, name, *rest)
