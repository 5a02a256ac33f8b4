"""Start the operator: Kubernetes clients, peering, the runtime, then kopf's event loop."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
from dataclasses import dataclass

import kopf
from kubernetes import client, config
from kubernetes.dynamic.exceptions import ConflictError, ResourceNotFoundError

from .api import API_VERSION, KIND
from .kube_client import KubeClient
from .peering import PeeringGate, Peers
from .runtime import Runtime

log = logging.getLogger(__name__)
PEERING_API = "kopf.dev/v1"


@dataclass(frozen=True)
class OperatorOptions:
    kubeconfig: str | None = None
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    peering: str | None = "pagoda"  # None: standalone, no peers
    priority: int | None = None  # None: random, so two replicas never tie
    peering_lifetime: int = 30
    bind: str = "0.0.0.0"
    liveness_port: int = 8080
    metrics_port: int = 9090  # 0: no metrics endpoint
    workers: int = 4
    resync_seconds: float = 300.0
    verbose: bool = False


def run_operator(options: OperatorOptions) -> int:
    try:
        # The kubeconfig file if given, else $KUBECONFIG or ~/.kube/config, else in-cluster.
        config.load_config(**({"config_file": options.kubeconfig} if options.kubeconfig else {}))
    except config.ConfigException as error:
        raise SystemExit(
            f"no Kubernetes credentials ({error}): pass --kubeconfig, set KUBECONFIG, or run"
            " in a pod with a ServiceAccount"
        ) from error
    identity = os.environ.get("POD_ID") or f"{socket.gethostname()}-{os.getpid()}"
    priority = options.priority if options.priority is not None else random.randint(1, 2**30)
    credentials = client.Configuration.get_default_copy()
    kube = KubeClient(client.ApiClient(credentials), reporter=identity)
    try:  # kopf looks for resources once, at start: without the CRD it would idle silently
        kube.resource(API_VERSION, KIND)
    except ResourceNotFoundError as error:
        raise SystemExit(
            f"the {KIND} CRD ({API_VERSION}) is not installed: apply crds/ or manifests/"
        ) from error
    read_peers = None
    if options.peering:
        read_peers = _peering(kube, options.peering, options.namespaces)
    gate = PeeringGate(read_peers, identity, priority)
    memo = kopf.Memo(
        runtime=Runtime(kube, gate, options.workers, options.resync_seconds),
        credentials=credentials,
        bind=options.bind,
        metrics_port=options.metrics_port,
        peering_lifetime=options.peering_lifetime,
    )
    from . import handlers  # noqa: F401  (registers the kopf handlers)

    kopf.configure(verbose=options.verbose)
    if not options.verbose:  # kopf logs every handled watch event; keep warnings only
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    log.info("operator %s starting (peering %s, priority %d)", identity, options.peering, priority)
    kopf.run(
        clusterwide=not options.namespaces,
        namespaces=list(options.namespaces),
        standalone=options.peering is None,
        peering_name=options.peering,
        priority=priority,
        # kopf types identity as its Identity, a NewType of str that it does not export.
        identity=identity,  # type: ignore[arg-type]
        liveness_endpoint=f"http://{options.bind}:{options.liveness_port}/healthz",
        memo=memo,
    )
    return 0


def _peering(kube: KubeClient, name: str, namespaces: tuple[str, ...]):
    """Make sure the peering objects exist (kopf only joins them), and return how to read them."""
    kind = "KopfPeering" if namespaces else "ClusterKopfPeering"
    try:
        resource = kube.resource(PEERING_API, kind)
    except ResourceNotFoundError as error:
        raise SystemExit(
            f"the {kind} CRD ({PEERING_API}) is not installed: apply manifests/ or run with"
            " --standalone"
        ) from error
    scopes: list[str | None] = list(namespaces) or [None]  # None: cluster-wide
    for namespace in scopes:
        body = {"apiVersion": PEERING_API, "kind": kind, "metadata": {"name": name}}
        with contextlib.suppress(ConflictError):  # another replica made it
            resource.create(body=body, namespace=namespace)

    def read() -> list[Peers]:
        return [
            (resource.get(name=name, namespace=namespace).to_dict().get("status") or {})
            for namespace in scopes
        ]

    return read
