"""The Services in front of the worker pods, and the disruption budget of the worker pods."""

from __future__ import annotations

from .api.status import Tier
from .naming import LABEL_DEPLOYMENT, Owner, tier_selector, tier_service_name


def service(owner: Owner, port: int, selector: dict[str, str]) -> dict:
    """The LLMDeployment's endpoint. It selects the tier that serves (switching tiers is one
    selector change), or the gateway pods once a gateway has had one ready
    (status.serviceTarget)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": owner.metadata(owner.name),
        "spec": {"type": "ClusterIP", "selector": selector, "ports": _http(port)},
    }


def tier_service(owner: Owner, port: int, role: str, tier: Tier) -> dict:
    """Headless, for the gateway: it reads the tier's ready pods from this Service's
    EndpointSlices. `role` (active, standby) names it; promote and demote swap the tiers."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": owner.metadata(tier_service_name(owner.name, role)),
        "spec": {
            "clusterIP": "None",
            "selector": tier_selector(owner.name, tier),
            "ports": _http(port),
            "publishNotReadyAddresses": False,
        },
    }


def _http(port: int) -> list[dict]:
    return [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}]


def endpoint(owner: Owner, port: int) -> str:
    return f"http://{owner.name}.{owner.namespace}.svc:{port}/v1"


def disruption_budget(owner: Owner, name: str | None = None, pods: dict | None = None) -> dict:
    """Node drains take the pods (by default the worker pods) one at a time. Pods that are not
    ready may always be evicted, so a crash-looping pod never blocks a drain."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": owner.metadata(name or owner.name),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": pods or {LABEL_DEPLOYMENT: owner.name}},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
