"""All the operator's Kubernetes API calls, for one LLMDeployment at a time. No decisions here."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

from kubernetes import client
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ConflictError, DynamicApiError, NotFoundError
from kubernetes.dynamic.resource import Resource

from .api import API_VERSION, KIND
from .conditions import Transition
from .naming import FIELD_MANAGER, LABEL_DEPLOYMENT, LABEL_GATEWAY, deployment_name, gateway_name
from .observed import World
from .rejection import Rejection

# What the apiserver answers when it refuses an object as written (invalid, or forbidden by an
# admission check), as opposed to failing to answer: retrying the same object will not help.
REFUSALS = (400, 403, 422)


class StatusConflict(Exception):
    """The LLMDeployment changed while it was being reconciled; reconcile it again."""


class ChildRejected(Exception):
    def __init__(self, rejection: Rejection):
        super().__init__(f"{rejection.kind} {rejection.name} rejected: {rejection.message}")
        self.rejection = rejection


class KubeClient:
    """The operator's client of the apiserver: what the reconciler reads and writes."""

    def __init__(self, api_client: client.ApiClient, reporter: str):
        self.reporter = reporter  # this operator replica, named in the Events it posts
        self.dynamic = DynamicClient(api_client)
        self.dynamic.resources.invalidate_cache()  # its file cache may predate today's CRDs
        self.core = client.CoreV1Api(api_client)
        self._resources: dict[tuple[str, str], Resource] = {}

    def resource(self, api_version: str, kind: str) -> Resource:
        key = (api_version, kind)
        if key not in self._resources:
            self._resources[key] = self.dynamic.resources.get(api_version=api_version, kind=kind)
        return self._resources[key]

    def read_world(self, namespace: str, name: str) -> World | None:
        """The LLMDeployment and everything it owns, or None if it is gone."""
        found = self._get(API_VERSION, KIND, namespace, name)
        if found is None:
            return None
        selector = f"{LABEL_DEPLOYMENT}={name}"
        deployments = {
            tier: obj
            for tier in ("primary", "fallback")
            if (obj := self._get("apps/v1", "Deployment", namespace, deployment_name(name, tier)))
        }
        gateway = self._get("apps/v1", "Deployment", namespace, gateway_name(name))
        gateway_pods = []
        if found["spec"].get("gateway"):
            gateway_pods = self._list("v1", "Pod", namespace, f"{LABEL_GATEWAY}={name}")
        nodes = []
        if found["spec"].get("fallback"):  # the fallback's capacity is checked (capacity.py)
            nodes = [item.to_dict() for item in self.resource("v1", "Node").get().items]
        return World(
            resource=found,
            nodes=nodes,
            deployments=deployments,
            pods=self._list("v1", "Pod", namespace, selector),
            quotas=self._list("v1", "ResourceQuota", namespace),
            config_maps=self._list("v1", "ConfigMap", namespace, selector),
            gateway=gateway,
            gateway_pods=gateway_pods,
            now=datetime.now(UTC),
        )

    def apply(self, obj: dict) -> None:
        """Server-side apply as the operator's field manager; unchanged objects stay untouched.
        Raises ChildRejected when the apiserver refuses the object."""
        try:
            self.dynamic.server_side_apply(
                self.resource(obj["apiVersion"], obj["kind"]),
                body=obj,
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
            )
        except DynamicApiError as error:
            if error.status not in REFUSALS:
                raise
            name = obj["metadata"]["name"]
            raise ChildRejected(Rejection(obj["kind"], name, error.summary())) from error

    def delete(self, namespace: str, ref: dict) -> None:
        with contextlib.suppress(NotFoundError):  # already gone
            self.resource(ref["apiVersion"], ref["kind"]).delete(
                name=ref["name"], namespace=namespace, propagation_policy="Background"
            )

    def write_status(self, resource: dict, status: dict) -> None:
        """Replace the status subresource, guarded by resourceVersion: a concurrent change of
        the object makes this fail rather than overwrite what someone else just did."""
        body = {**resource, "status": status}
        try:
            self.resource(API_VERSION, KIND).status.replace(body=body, field_manager=FIELD_MANAGER)
        except (ConflictError, NotFoundError) as error:
            raise StatusConflict(str(error)) from error

    def post_event(self, resource: dict, transition: Transition) -> None:
        meta = resource["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        # The client would validate a dict body into this model anyway; here mypy sees the type.
        event = client.CoreV1Event.model_validate(
            {
                "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
                "involvedObject": {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "name": meta["name"],
                    "namespace": meta["namespace"],
                    "uid": meta["uid"],
                    "resourceVersion": meta.get("resourceVersion"),
                },
                "type": "Warning" if transition.warning else "Normal",
                "reason": transition.reason,
                "message": f"{transition.type}={transition.status}: {transition.message}"[:1024],
                "source": {"component": FIELD_MANAGER},
                "reportingComponent": f"pagoda.dev/{FIELD_MANAGER}",
                "reportingInstance": self.reporter[:128],
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            }
        )
        self.core.create_namespaced_event(meta["namespace"], event, field_manager=FIELD_MANAGER)

    def _get(self, api_version: str, kind: str, namespace: str, name: str) -> dict | None:
        try:
            return self.resource(api_version, kind).get(name=name, namespace=namespace).to_dict()
        except NotFoundError:
            return None

    def _list(self, api_version: str, kind: str, namespace: str, selector: str | None = None):
        found = self.resource(api_version, kind).get(namespace=namespace, label_selector=selector)
        return [item.to_dict() for item in found.items]
