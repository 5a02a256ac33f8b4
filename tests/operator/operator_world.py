"""Kubernetes objects as the API returns them, small enough to read in a test table."""

from __future__ import annotations

from datetime import UTC, datetime

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
PVC_SOURCE = {"pvc": {"claimName": "models", "path": "stories260K"}}


def llmd(status: dict | None = None, generation: int = 1, **spec) -> dict:
    body = {"model": {"name": "stories", "source": PVC_SOURCE}, "replicas": 2} | spec
    obj = {
        "apiVersion": "pagoda.dev/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {
            "namespace": "team",
            "name": "demo",
            "uid": "uid-1",
            "generation": generation,
            "resourceVersion": "7",
        },
        "spec": body,
    }
    if status is not None:
        obj["status"] = status
    return obj


def deployment(
    tier: str = "primary",
    revision: str = "r1",
    wanted: int = 2,
    ready: int = 2,
    updated: int | None = None,
    replicas: int | None = None,
    available: int | None = None,
    synced: bool = True,
    deadline_exceeded: bool = False,
    replica_failure: str | None = None,
) -> dict:
    conditions = []
    if deadline_exceeded:
        conditions.append(
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
        )
    if replica_failure:
        conditions.append(
            {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
             "message": replica_failure}
        )  # fmt: skip
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": f"demo-{tier}",
            "generation": 3,
            "ownerReferences": [{"kind": "LLMDeployment", "name": "demo", "uid": "uid-1"}],
        },
        "spec": {
            "replicas": wanted,
            "template": {"metadata": {"labels": {"pagoda.dev/revision": revision}}},
        },
        "status": {
            "observedGeneration": 3 if synced else 2,
            "replicas": wanted if replicas is None else replicas,
            "readyReplicas": ready,
            "updatedReplicas": wanted if updated is None else updated,
            "availableReplicas": ready if available is None else available,
            "conditions": conditions,
        },
    }


def pod(
    name: str = "demo-primary-abc",
    tier: str = "primary",
    phase: str = "Running",
    ready: bool = True,
    gpus: int = 1,
    waiting: str | None = None,
    last_terminated: str | None = None,
    exit_code: int = 1,
    restarts: int = 0,
    started: bool | None = True,
    unschedulable: str | None = None,
    deleting: bool = False,
    revision: str | None = None,
    ready_since: datetime | None = None,
) -> dict:
    """A worker pod; `ready_since` sets its Ready condition's lastTransitionTime."""
    container = {"name": "worker", "ready": ready, "restartCount": restarts, "image": "w:1"}
    if started is not None:
        container["started"] = started
    if waiting:
        container["state"] = {"waiting": {"reason": waiting, "message": f"{waiting} details"}}
    else:
        container["state"] = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
    if last_terminated:
        container["lastState"] = {"terminated": {"reason": last_terminated, "exitCode": exit_code}}
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    if ready_since:
        conditions[0]["lastTransitionTime"] = ready_since.strftime("%Y-%m-%dT%H:%M:%SZ")
    if unschedulable:
        conditions.append(
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": unschedulable}
        )  # fmt: skip
    metadata = {"name": name, "labels": {"pagoda.dev/tier": tier, "pagoda.dev/deployment": "demo"}}
    if revision:
        metadata["labels"]["pagoda.dev/revision"] = revision
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    resources = {"requests": {"nvidia.com/gpu": str(gpus)}} if gpus else {}
    return {
        "metadata": metadata,
        "spec": {"containers": [{"name": "worker", "resources": resources}]},
        "status": {
            "phase": phase,
            "conditions": conditions,
            "containerStatuses": [] if unschedulable else [container],
        },
    }


def quota(hard: int, used: int, name: str = "gpus") -> dict:
    key = "requests.nvidia.com/gpu"
    return {
        "metadata": {"name": name},
        "spec": {"hard": {key: str(hard)}},
        "status": {"hard": {key: str(hard)}, "used": {key: str(used)}},
    }
