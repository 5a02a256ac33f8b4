"""The LLMDeployment status: everything the operator computes, nothing the user writes."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from .base import ApiModel

Tier = Literal["primary", "fallback"]
ServiceTarget = Literal["workers", "gateway"]
Phase = Literal["Pending", "Progressing", "Ready", "Degraded", "RolledBack", "Failed"]
MESSAGE_LIMIT = 4096
CONDITION_TYPES = (
    "Ready",
    "UpToDate",
    "Progressing",
    "Degraded",
    "FallbackActive",
    "QuotaExceeded",
    "RolledBack",
    "GatewayReady",
)


class Condition(ApiModel):
    """One observation about the LLMDeployment, in the Kubernetes condition convention."""

    type: str = Field(max_length=64)
    """Ready, UpToDate, Progressing, Degraded, FallbackActive, QuotaExceeded, RolledBack or
    GatewayReady."""
    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""
    reason: str = Field(max_length=64)
    """A CamelCase word for machines and dashboards."""
    message: str = Field(max_length=MESSAGE_LIMIT)
    """What is going on and what to do about it, for people."""
    last_transition_time: datetime
    """When status last changed."""
    observed_generation: int = Field(ge=0)
    """The spec generation this condition was computed from."""


class GpuAccounting(ApiModel):
    """GPUs (nvidia.com/gpu) this LLMDeployment asks for, against the namespace's quota."""

    requested: int = Field(0, ge=0)
    """Peak GPUs requested: primary + rollout surge + fallback."""
    steady: int = Field(0, ge=0)
    """GPUs of the running replicas of both tiers, without rollout surge."""
    primary: int = Field(0, ge=0)
    """GPUs of the primary replicas."""
    surge: int = Field(0, ge=0)
    """GPUs of the extra pods rollouts of both tiers may add (0 when rolling without surge)."""
    fallback: int = Field(0, ge=0)
    """GPUs of the fallback replicas that run (warm, or promoted)."""
    quota: int | None = None
    """The namespace's tightest ResourceQuota on requests.nvidia.com/gpu; unset when none."""
    used_by_others: int | None = None
    """GPUs that other pods of the namespace hold against that quota."""
    headroom: int | None = None
    """quota - usedByOthers - requested; negative means the quota is exceeded."""


class Revisions(ApiModel):
    """Content hashes of the primary tier's pod configuration (model, engine, image, resources)."""

    desired: str | None = None
    """The revision the spec asks for."""
    current: str | None = None
    """The revision the primary Deployment runs or rolls towards."""
    last_ready: str | None = None
    """The newest revision whose rollout completed with every pod ready; rollbacks return here."""
    rolled_back_from: str | None = None
    """The spec's revision, when it was rolled back (it missed its progress deadline or crashed
    before it became ready); it stays rolled back until the spec changes."""


class TierClock(ApiModel):
    """When the primary tier's health last changed, for promote/demote deadlines."""

    primary_unavailable_since: datetime | None = None
    """Since when the primary has had fewer than fallback.minPrimaryReady ready pods."""
    primary_recovered_since: datetime | None = None
    """Since when the primary has been healthy again while the fallback serves."""


class LLMDeploymentStatus(ApiModel):
    """What the operator observed and decided."""

    phase: Phase = "Pending"
    """Pending (nothing ready yet), Progressing (rolling out), Ready, Degraded (see the Degraded
    condition), RolledBack (serving an earlier revision: the spec's was rolled back) or Failed
    (the apiserver refused a child object: see Ready)."""
    observed_generation: int = Field(0, ge=0)
    """The spec generation this status was computed from."""
    replicas: int = Field(0, ge=0)
    """Primary pods that exist (all revisions)."""
    ready_replicas: int = Field(0, ge=0)
    """Primary pods that pass readiness."""
    updated_replicas: int = Field(0, ge=0)
    """Primary pods of the current revision."""
    fallback_replicas: int = Field(0, ge=0)
    """Fallback pods that exist."""
    fallback_ready_replicas: int = Field(0, ge=0)
    """Fallback pods that pass readiness."""
    gateway_replicas: int = Field(0, ge=0)
    """Gateway pods that exist (0 without spec.gateway)."""
    gateway_ready_replicas: int = Field(0, ge=0)
    """Gateway pods that pass readiness; once serviceTarget is gateway, nothing is served while
    this is 0."""
    service_target: ServiceTarget = "workers"
    """What the LLMDeployment's Service sends clients to: `workers` (the active tier's pods
    directly) or `gateway` (the gateway pods). With spec.gateway it turns to `gateway` once a
    gateway pod has been ready, so turning a gateway on never leaves clients without a pod, and
    stays there while spec.gateway is set, even when no gateway pod is ready (the workers would
    bypass the tenants' keys and limits; GatewayReady and Ready say so). Without spec.gateway it
    is `workers`."""
    active_tier: Tier = "primary"
    """The tier that serves: the Service, or with spec.gateway the gateway, sends traffic to
    it."""
    model: str = ""
    """Model name served by the last primary revision that became ready (empty before one has);
    during a rollout or after a rollback it can differ from spec.model.name."""
    endpoint: str = ""
    """In-cluster base URL of the OpenAI-compatible API."""
    selector: str = ""
    """Label selector of the primary pods (for the scale subresource and autoscalers)."""
    gpus: GpuAccounting = Field(default_factory=GpuAccounting)
    """GPU requests against the namespace quota."""
    revisions: Revisions = Field(default_factory=Revisions)
    """Primary tier revisions: desired, current, last ready, rolled back from."""
    tier_clock: TierClock = Field(default_factory=TierClock)
    """Timestamps behind the fallback promote/demote decisions."""
    conditions: list[Condition] = Field(default_factory=list, max_length=16)
    """Ready, UpToDate, Progressing, Degraded, FallbackActive, QuotaExceeded, RolledBack,
    GatewayReady."""

    def condition(self, kind: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == kind), None)
