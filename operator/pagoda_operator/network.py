"""The Service in front of the active tier, and the disruption budget of the worker pods."""

from __future__ import annotations

from .api.status import Tier
from .naming import LABEL_DEPLOYMENT, Owner, tier_selector


def service(owner: Owner, port: int, active_tier: Tier) -> dict:
    """Selects the tier that serves: switching tiers is one selector change."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": owner.metadata(owner.name),
        "spec": {
            "type": "ClusterIP",
            "selector": tier_selector(owner.name, active_tier),
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def endpoint(owner: Owner, port: int) -> str:
    return f"http://{owner.name}.{owner.namespace}.svc:{port}/v1"


def disruption_budget(owner: Owner) -> dict:
    """Node drains take worker pods one at a time. Pods that are not ready may always be
    evicted, so a crash-looping pod never blocks a drain."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": owner.metadata(owner.name),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": {LABEL_DEPLOYMENT: owner.name}},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
