"""Names and labels of the objects an LLMDeployment owns."""

from __future__ import annotations

from dataclasses import dataclass

from .api import API_VERSION, KIND
from .api.status import Tier

FIELD_MANAGER = "pagoda-operator"
LABEL_DEPLOYMENT = "pagoda.dev/deployment"
LABEL_TIER = "pagoda.dev/tier"
# On gateway pods instead of LABEL_DEPLOYMENT, which the PDB, pod health, GPU accounting and the
# tier selectors key on.
LABEL_GATEWAY = "pagoda.dev/gateway"
LABEL_NAME = "app.kubernetes.io/name"
# The pod template's config hash: any change of model, engine, image or resources changes it,
# which is what makes the Deployment roll.
LABEL_REVISION = "pagoda.dev/revision"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "pagoda-operator"
GPU = "nvidia.com/gpu"


@dataclass(frozen=True)
class Owner:
    """The LLMDeployment being reconciled, as its children refer to it."""

    namespace: str
    name: str
    uid: str

    def reference(self) -> dict:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def metadata(self, name: str, tier: Tier | None = None, **labels: str) -> dict:
        return {
            "name": name,
            "namespace": self.namespace,
            "labels": {**common_labels(self.name, tier), **labels},
            "ownerReferences": [self.reference()],
        }


def common_labels(deployment: str, tier: Tier | None = None) -> dict[str, str]:
    labels = {
        LABEL_NAME: "pagoda-worker",
        "app.kubernetes.io/instance": deployment,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_DEPLOYMENT: deployment,
    }
    if tier:
        labels[LABEL_TIER] = tier
    return labels


def tier_selector(deployment: str, tier: Tier) -> dict[str, str]:
    return {LABEL_DEPLOYMENT: deployment, LABEL_TIER: tier}


def gateway_selector(deployment: str) -> dict[str, str]:
    return {LABEL_GATEWAY: deployment}


def selector_string(labels: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def deployment_name(deployment: str, tier: Tier) -> str:
    return f"{deployment}-{tier}"


def config_map_name(deployment: str, tier: Tier, revision: str) -> str:
    return f"{deployment}-{tier}-{revision}"


def gateway_name(deployment: str) -> str:
    """The gateway's Deployment, ConfigMap, ServiceAccount, Role and RoleBinding."""
    return f"{deployment}-gateway"


def tier_service_name(deployment: str, role: str) -> str:
    """The headless Services the gateway discovers workers by: `active`, `standby`."""
    return f"{deployment}-{role}"
