"""The Pagoda gateway (spec.gateway) as plain Kubernetes objects: its pods, the least privilege
they need to discover worker pods, their tenants file, and the headless Services they discover
the tiers through."""

from __future__ import annotations

import hashlib

import yaml

from .api.spec import GatewaySpec, LLMDeploymentSpec, TenantSpec
from .api.status import Tier
from .naming import (
    LABEL_GATEWAY,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    MANAGED_BY,
    Owner,
    gateway_name,
    gateway_selector,
    tier_service_name,
)
from .network import disruption_budget, tier_service
from .workload import (
    API_KEY_DIR,
    CONFIG_DIR,
    EXIT_SECONDS,
    PRESTOP_SECONDS,
    TERMINATION_MESSAGE_POLICY,
    container_security,
    drain_seconds,
    http_probe,
    key_volume,
    pod_security,
)

GATEWAY_UID = 65532  # the operator image's user
TENANTS_DIR = f"{CONFIG_DIR}/gateway"
TENANTS_FILE = "tenants.yaml"
TENANT_KEYS_DIR = f"{CONFIG_DIR}/tenant-keys"
BACKEND_KEY_FILE = f"{API_KEY_DIR}/key"
# Without tenants, the one tenant that holds spec.serving.apiKeySecret's key.
DEFAULT_TENANT = "default"
# The tenants file's hash on the pod template: a tenant change rolls the gateway pods, which read
# the file at start (the ConfigMap keeps its name, so nothing else would change).
TENANTS_HASH = "pagoda.dev/tenants-sha256"
RBAC_API = "rbac.authorization.k8s.io/v1"
STANDBY: dict[Tier, Tier] = {"primary": "fallback", "fallback": "primary"}
LIMITS = ("requests_per_minute", "tokens_per_minute", "concurrent_requests")


def gateway_objects(owner: Owner, spec: LLMDeploymentSpec, active: Tier) -> list[dict]:
    """Everything spec.gateway adds, in apply order: the tenants file first and the Deployment
    last, so a later pass that finds either knows the rest may exist (plan.py deletes them)."""
    tenants = tenants_config_map(owner, spec)
    services = [tier_service(owner, spec.serving.port, "active", active)]
    if spec.fallback is not None:
        services.append(tier_service(owner, spec.serving.port, "standby", STANDBY[active]))
    return [
        tenants,
        _object("v1", "ServiceAccount", owner),
        role(owner),
        role_binding(owner),
        *services,
        # a drain never takes every gateway pod at once: all traffic goes through them
        disruption_budget(owner, gateway_name(owner.name), gateway_selector(owner.name)),
        deployment(owner, spec, _sha256(tenants["data"][TENANTS_FILE])),
    ]


def gateway_refs(deployment_name: str) -> list[dict]:
    """What to delete once spec.gateway is gone, the Deployment last (see gateway_objects). The
    tenants ConfigMap goes with the LLMDeployment's other unused ConfigMaps."""
    name = gateway_name(deployment_name)
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "name": name},
        {"apiVersion": RBAC_API, "kind": "RoleBinding", "name": name},
        {"apiVersion": RBAC_API, "kind": "Role", "name": name},
        *(tier_service_ref(deployment_name, role) for role in ("active", "standby")),
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "name": name},
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
    ]


def tier_service_ref(deployment_name: str, role: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "name": tier_service_name(deployment_name, role)}


def tenants_config_map(owner: Owner, spec: LLMDeploymentSpec) -> dict:
    return {
        **_object("v1", "ConfigMap", owner),
        "data": {TENANTS_FILE: yaml.safe_dump({"tenants": tenant_entries(spec)}, sort_keys=False)},
    }


def tenant_entries(spec: LLMDeploymentSpec) -> list[dict]:
    """The tenants as the gateway reads them. Without tenants, a key on the workers stays the
    clients' key: the gateway checks it as tenant `default` (no limits), so adding a gateway
    never opens an endpoint that required a key. Empty: the gateway checks no key."""
    tenants = _gateway(spec).tenants
    if tenants:
        return [_tenant_entry(tenant) for tenant in tenants]
    if spec.serving.api_key_secret is not None:
        return [{"name": DEFAULT_TENANT, "keyFile": BACKEND_KEY_FILE}]
    return []


def role(owner: Owner) -> dict:
    """Reading EndpointSlices in its own namespace, nothing else: not Secrets (keys come as
    mounted files), not pods (readiness is in the slices)."""
    rule = {
        "apiGroups": ["discovery.k8s.io"],
        "resources": ["endpointslices"],
        "verbs": ["get", "list", "watch"],
    }
    return {**_object(RBAC_API, "Role", owner), "rules": [rule]}


def role_binding(owner: Owner) -> dict:
    name = gateway_name(owner.name)
    return {
        **_object(RBAC_API, "RoleBinding", owner),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner.namespace}],
    }


def deployment(owner: Owner, spec: LLMDeploymentSpec, tenants_hash: str) -> dict:
    return {
        **_object("apps/v1", "Deployment", owner),
        "spec": {
            "replicas": _gateway(spec).replicas,
            "selector": {"matchLabels": gateway_selector(owner.name)},
            # A new gateway pod is ready before an old one goes: the Service always has one.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "revisionHistoryLimit": 3,
            "template": pod_template(owner, spec, tenants_hash),
        },
    }


def pod_template(owner: Owner, spec: LLMDeploymentSpec, tenants_hash: str) -> dict:
    gateway = _gateway(spec)
    name = gateway_name(owner.name)
    drain = drain_seconds(spec.serving)  # streams in flight get what the workers give theirs
    args = [
        "gateway",
        "--host", "0.0.0.0",
        "--port", str(spec.serving.port),
        "--discover", f"{owner.namespace}/{owner.name}",
        "--hold-queue-size", str(gateway.hold_queue.size),
        "--hold-timeout", str(gateway.hold_queue.timeout_seconds),
        "--drain-timeout", str(drain),
    ]  # fmt: skip
    volumes: list[dict] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[dict] = [{"name": "tmp", "mountPath": "/tmp"}]
    if tenant_entries(spec):
        volumes.append({"name": "tenants", "configMap": {"name": name}})
        mounts.append({"name": "tenants", "mountPath": TENANTS_DIR, "readOnly": True})
        args += ["--tenants", f"{TENANTS_DIR}/{TENANTS_FILE}"]
    # Volume names by position: a tenant name may be as long as a volume name may be.
    for index, tenant in enumerate(gateway.tenants):
        volume = f"tenant-key-{index}"
        volumes.append(key_volume(volume, tenant.api_key_secret))
        mounts.append({"name": volume, "mountPath": _key_dir(tenant), "readOnly": True})
    backend_key = spec.serving.api_key_secret
    if backend_key is not None:  # the workers want it from the gateway as from any client
        volumes.append(key_volume("api-key", backend_key))
        mounts.append({"name": "api-key", "mountPath": API_KEY_DIR, "readOnly": True})
        args += ["--backend-api-key-file", BACKEND_KEY_FILE]

    resources = gateway.resources
    container = {
        "name": "gateway",
        "image": gateway.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["pagoda"],  # every Pagoda image has it, whatever its entrypoint
        "args": args,
        "ports": [{"name": "http", "containerPort": spec.serving.port, "protocol": "TCP"}],
        "resources": {
            "requests": {"cpu": resources.cpu, "memory": resources.memory},
            "limits": {"memory": resources.memory},
        },
        "readinessProbe": http_probe("/ready", period=2, failures=2),
        "livenessProbe": http_probe("/health", period=10, failures=3),
        # Endpoints drop the pod before SIGTERM, so no new request reaches a stopping gateway.
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SECONDS}}},
        "volumeMounts": mounts,
        "securityContext": container_security(),
        "terminationMessagePolicy": TERMINATION_MESSAGE_POLICY,
    }
    return {
        "metadata": {
            "labels": gateway_pod_labels(owner.name),
            "annotations": {TENANTS_HASH: tenants_hash},
        },
        "spec": {
            "serviceAccountName": name,
            "automountServiceAccountToken": True,  # it watches EndpointSlices
            "containers": [container],
            "volumes": volumes,
            "terminationGracePeriodSeconds": PRESTOP_SECONDS + drain + EXIT_SECONDS,
            "securityContext": pod_security(GATEWAY_UID),
            "enableServiceLinks": False,
        },
    }


def gateway_pod_labels(deployment_name: str) -> dict[str, str]:
    """No pagoda.dev/deployment: gateway pods are not worker pods (see naming.LABEL_GATEWAY)."""
    return {
        LABEL_NAME: "pagoda-gateway",
        "app.kubernetes.io/instance": deployment_name,
        LABEL_MANAGED_BY: MANAGED_BY,
        **gateway_selector(deployment_name),
    }


def _gateway(spec: LLMDeploymentSpec) -> GatewaySpec:
    """spec.gateway, which is set wherever the gateway's objects are made (plan.py checks)."""
    assert spec.gateway is not None, "the gateway's objects for a spec without spec.gateway"
    return spec.gateway


def _object(api_version: str, kind: str, owner: Owner) -> dict:
    """The gateway's objects carry the LLMDeployment's labels too: the operator's watches and
    lists find them by those."""
    labels = {LABEL_NAME: "pagoda-gateway", LABEL_GATEWAY: owner.name}
    return {
        "apiVersion": api_version,
        "kind": kind,
        # tier=None spelled out: else mypy fears **labels could set it
        "metadata": owner.metadata(gateway_name(owner.name), tier=None, **labels),
    }


def _tenant_entry(tenant: TenantSpec) -> dict:
    """As the gateway reads it: camelCase, unset limits left out (unlimited)."""
    entry: dict = {"name": tenant.name, "keyFile": f"{_key_dir(tenant)}/key"}
    for limit in LIMITS:
        value = getattr(tenant, limit)
        if value is not None:
            entry[TenantSpec.model_fields[limit].alias] = value
    return entry


def _key_dir(tenant: TenantSpec) -> str:
    return f"{TENANT_KEYS_DIR}/{tenant.name}"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
