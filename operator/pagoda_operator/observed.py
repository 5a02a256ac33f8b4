"""What the operator reads back from Kubernetes, reduced to the facts its decisions use."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from kubernetes.utils import parse_quantity

from .naming import GPU, LABEL_REVISION, LABEL_TIER


@dataclass(frozen=True)
class World:
    """Everything read from the API for one LLMDeployment."""

    resource: dict
    deployments: dict[str, dict] = field(default_factory=dict)  # by tier
    pods: list[dict] = field(default_factory=list)
    quotas: list[dict] = field(default_factory=list)
    config_maps: list[dict] = field(default_factory=list)  # revisions', and the gateway's
    gateway: dict | None = None  # the gateway Deployment
    gateway_pods: list[dict] = field(default_factory=list)
    nodes: list[dict] = field(default_factory=list)  # read only when there is a fallback tier
    now: datetime = field(default_factory=datetime.now)


@dataclass(frozen=True)
class DeploymentState:
    """A worker Deployment as its controller reports it."""

    revision: str | None
    wanted: int
    synced: bool  # the controller has seen the latest spec
    replicas: int
    ready: int
    updated: int
    available: int
    deadline_exceeded: bool
    replica_failure: str | None  # why pods could not be created (e.g. quota), if so

    @property
    def complete(self) -> bool:
        """Every pod runs the template and is available, and no old pod is left."""
        return self.synced and self.wanted == self.updated == self.replicas == self.available

    @classmethod
    def from_object(cls, obj: dict) -> DeploymentState:
        meta, spec, status = obj["metadata"], obj.get("spec", {}), obj.get("status") or {}
        labels = spec.get("template", {}).get("metadata", {}).get("labels", {})
        conditions = {c["type"]: c for c in status.get("conditions") or []}
        progressing = conditions.get("Progressing", {})
        failure = conditions.get("ReplicaFailure", {})
        return cls(
            revision=labels.get(LABEL_REVISION),
            wanted=spec.get("replicas", 1),
            synced=status.get("observedGeneration", 0) >= meta.get("generation", 0),
            replicas=status.get("replicas", 0),
            ready=status.get("readyReplicas", 0),
            updated=status.get("updatedReplicas", 0),
            available=status.get("availableReplicas", 0),
            deadline_exceeded=progressing.get("status") == "False"
            and progressing.get("reason") == "ProgressDeadlineExceeded",
            replica_failure=failure.get("message") if failure.get("status") == "True" else None,
        )


@dataclass(frozen=True)
class GpuQuota:
    """The tightest ResourceQuota on requests.nvidia.com/gpu in a namespace."""

    name: str
    hard: int
    used: int

    @classmethod
    def tightest(cls, quotas: list[dict]) -> GpuQuota | None:
        key = f"requests.{GPU}"
        found = [
            cls(
                name=q["metadata"]["name"],
                hard=math.floor(parse_quantity(q["spec"]["hard"][key])),
                used=math.ceil(
                    parse_quantity(((q.get("status") or {}).get("used") or {}).get(key, "0"))
                ),
            )
            for q in quotas
            if key in (q.get("spec") or {}).get("hard", {})
        ]
        return min(found, key=lambda q: q.hard - q.used, default=None)


def pod_tier(pod: dict) -> str | None:
    return pod["metadata"].get("labels", {}).get(LABEL_TIER)


def pod_gpus(pod: dict) -> int:
    """GPUs a pod holds against quota: requests of its app containers, unless it has ended."""
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return 0
    containers = pod.get("spec", {}).get("containers", [])
    requests = [((c.get("resources") or {}).get("requests") or {}) for c in containers]
    return sum(math.ceil(parse_quantity(r.get(GPU, "0"))) for r in requests)
