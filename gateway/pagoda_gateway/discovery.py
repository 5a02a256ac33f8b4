"""Where the workers are: a static list (local runs), or the EndpointSlices of the Services the
operator renders (in a cluster).

In a cluster the gateway lists and watches EndpointSlices of three Services in its namespace:
`<name>-active` and `<name>-standby` (headless, selecting the tier that serves and the other
one) and `<name>` (the gateway's own Service: its ready endpoints are the gateway replicas, which
split the tenants' limits). Only endpoints the kubelet reports ready are used.

The watch is one list and one streamed watch of one resource, on the aiohttp the gateway already
runs (the synchronous kubernetes client would need a thread per watch): kube_api.py holds it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from .backends import Backend, BackendPool, Role
from .kube_api import KubeApi, WatchExpired

log = logging.getLogger("pagoda.gateway.discovery")
READY_PATH = "/ready"
RETRY_S = 1.0


class StaticDiscovery:
    """Fixed URLs; a backend counts as ready while its /ready answers 200 (checked every
    `interval_s`, never on the request path)."""

    def __init__(
        self,
        pool: BackendPool,
        active: list[str],
        standby: list[str],
        session: aiohttp.ClientSession,
        interval_s: float = 1.0,
    ) -> None:
        self.pool = pool
        # a trailing slash would send `//ready` and `//v1/...`, which no worker route matches
        self.urls: dict[Role, list[str]] = {
            "active": [url.rstrip("/") for url in active],
            "standby": [url.rstrip("/") for url in standby],
        }
        self.session = session
        self.interval_s = interval_s
        self.synced = asyncio.Event()

    async def run(self) -> None:
        while True:
            for role, urls in self.urls.items():
                checks = await asyncio.gather(*(self._ready(u) for u in urls))
                ready = [
                    Backend(_host_port(u), u) for u, ok in zip(urls, checks, strict=True) if ok
                ]
                self.pool.set_ready(role, ready)
            self.synced.set()
            await asyncio.sleep(self.interval_s)

    async def _ready(self, url: str) -> bool:
        try:
            timeout = aiohttp.ClientTimeout(total=self.interval_s)
            async with self.session.get(url + READY_PATH, timeout=timeout) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False


def _host_port(url: str) -> str:
    return url.split("://", 1)[-1].rstrip("/")


@dataclass
class SliceSet:
    """The EndpointSlices seen so far, by slice name."""

    service_of: dict[str, str] = field(default_factory=dict)
    endpoints_of: dict[str, list[Backend]] = field(default_factory=dict)

    def apply(self, event_type: str, endpoint_slice: dict) -> None:
        name = endpoint_slice["metadata"]["name"]
        if event_type == "DELETED":
            self.service_of.pop(name, None)
            self.endpoints_of.pop(name, None)
            return
        labels = endpoint_slice["metadata"].get("labels") or {}
        self.service_of[name] = labels.get("kubernetes.io/service-name", "")
        self.endpoints_of[name] = ready_backends(endpoint_slice)

    def ready(self, service: str) -> list[Backend]:
        found = {
            b.name: b
            for name, svc in self.service_of.items()
            if svc == service
            for b in self.endpoints_of[name]
        }
        return list(found.values())


def ready_backends(endpoint_slice: dict) -> list[Backend]:
    ports = endpoint_slice.get("ports") or []
    port = next((p.get("port") for p in ports if p.get("name") == "http"), None)
    if port is None and ports:
        port = ports[0].get("port")
    if port is None:
        return []
    ipv6 = endpoint_slice.get("addressType") == "IPv6"
    backends = []
    for endpoint in endpoint_slice.get("endpoints") or []:
        # `ready` unset means ready (the API's own convention); terminating pods are not ready
        if (endpoint.get("conditions") or {}).get("ready") is False or not endpoint["addresses"]:
            continue
        address = endpoint["addresses"][0]
        host = f"[{address}]" if ipv6 else address
        name = (endpoint.get("targetRef") or {}).get("name") or address
        backends.append(Backend(name, f"http://{host}:{port}"))
    return backends


class EndpointSliceDiscovery:
    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        name: str,
        pool: BackendPool,
        on_replicas: Callable[[int], None],
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.services = {"active": f"{name}-active", "standby": f"{name}-standby", "self": name}
        self.pool = pool
        self.on_replicas = on_replicas
        self.synced = asyncio.Event()
        self._path = f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
        names = ",".join(self.services.values())
        self._selector = f"kubernetes.io/service-name in ({names})"

    async def run(self) -> None:
        while True:
            try:
                await self._list_and_watch()
            except WatchExpired:
                log.info("the EndpointSlice watch expired; listing again")
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                log.warning("EndpointSlice watch failed (%s); retrying in %.0f s", e, RETRY_S)
                await asyncio.sleep(RETRY_S)

    async def _list_and_watch(self) -> None:
        listed = await self.api.get(self._path, labelSelector=self._selector)
        slices = SliceSet()
        for item in listed.get("items") or []:
            slices.apply("ADDED", item)
        self._publish(slices)
        version = listed["metadata"]["resourceVersion"]
        while True:  # a watch that times out resumes where it was; only 410 lists again
            async for event_type, obj in self.api.watch(self._path, version, self._selector):
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                if event_type != "BOOKMARK":
                    slices.apply(event_type, obj)
                    self._publish(slices)

    def _publish(self, slices: SliceSet) -> None:
        self.pool.set_ready("active", slices.ready(self.services["active"]))
        self.pool.set_ready("standby", slices.ready(self.services["standby"]))
        self.on_replicas(len(slices.ready(self.services["self"])))
        self.synced.set()
