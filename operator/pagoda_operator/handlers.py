"""kopf glue: watch events in, keys onto the work queue. No logic here.

Only `on.event` handlers: kopf then writes nothing to the LLMDeployment (no finalizer, no
progress annotations), so deleting one never waits for the operator.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
from prometheus_client import start_http_server

from .api import GROUP, PLURAL, VERSION
from .naming import LABEL_DEPLOYMENT, LABEL_GATEWAY, LABEL_MANAGED_BY, MANAGED_BY

# Label filters. Any: kopf's type for their values (a string, kopf.PRESENT or a callable) has no
# public name.
OURS: dict[str, Any] = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_DEPLOYMENT: kopf.PRESENT}
# Gateway pods carry no LABEL_DEPLOYMENT (naming.py says why); their Deployment does.
GATEWAY_PODS: dict[str, Any] = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_GATEWAY: kopf.PRESENT}


@kopf.on.startup()
async def start(
    settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    settings.posting.enabled = False  # our own Events say what changed and why
    settings.scanning.disabled = True  # no need to watch CRDs: fewer permissions
    settings.peering.lifetime = memo.peering_lifetime
    settings.peering.stealth = True
    if memo.metrics_port:
        start_http_server(memo.metrics_port, addr=memo.bind)
        logger.info("metrics on http://%s:%d/metrics", memo.bind, memo.metrics_port)
    memo.runtime.start()


@kopf.on.login()
def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    """kopf connects with the credentials the operator already loaded (--kubeconfig,
    $KUBECONFIG, ~/.kube/config or the pod's ServiceAccount)."""
    conf = memo.credentials
    header = conf.get_api_key_with_prefix("BearerToken") or conf.get_api_key_with_prefix(
        "authorization"
    )  # refreshed by the client when it expires
    scheme, _space, token = (header or "").rpartition(" ")
    return kopf.ConnectionInfo(
        server=conf.host,
        ca_path=conf.ssl_ca_cert,
        insecure=not conf.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=conf.cert_file,
        private_key_path=conf.key_file,
    )


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    await memo.runtime.stop()


@kopf.on.probe(id="active")
async def active(memo: kopf.Memo, **_: Any) -> bool:
    return await asyncio.to_thread(memo.runtime.gate.active)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def llmdeployment_event(
    type: str, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    memo.runtime.llmdeployment_changed(_namespaced(namespace), name, deleted=type == "DELETED")


@kopf.on.event("apps", "v1", "deployments", labels=OURS)
@kopf.on.event("v1", "pods", labels=OURS)
async def child_event(
    namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **_: Any
) -> None:
    memo.runtime.child_changed(_namespaced(namespace), labels[LABEL_DEPLOYMENT])


@kopf.on.event("v1", "pods", labels=GATEWAY_PODS)
async def gateway_pod_event(
    namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **_: Any
) -> None:
    memo.runtime.child_changed(_namespaced(namespace), labels[LABEL_GATEWAY])


@kopf.on.event("v1", "resourcequotas")
async def quota_event(namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    memo.runtime.namespace_changed(_namespaced(namespace))


def _namespaced(namespace: str | None) -> str:
    """kopf passes None for cluster-scoped objects; every resource watched here is namespaced."""
    assert namespace is not None, "a namespaced resource's event without a namespace"
    return namespace
