"""Where the workers are: EndpointSlices (against a fake API server on loopback) and a static
list whose /ready is checked."""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp
import pagoda_gateway.discovery
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pagoda_gateway.backends import Backend, BackendPool
from pagoda_gateway.discovery import (
    EndpointSliceDiscovery,
    SliceSet,
    StaticDiscovery,
    ready_backends,
)
from pagoda_gateway.kube_api import KubeApi

NAMESPACE, NAME = "serving", "llm"
SLICES_PATH = f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices"
SELECTOR = "kubernetes.io/service-name in (llm-active,llm-standby,llm)"


def endpoint_slice(name: str, service: str, pods: dict[str, bool | None], port: int = 8000) -> dict:
    """A slice of `service` with one IPv4 endpoint per pod (ready True, False or unset)."""
    endpoints = []
    for i, (pod, ready) in enumerate(pods.items()):
        endpoint = {"addresses": [f"10.1.0.{i + 1}"], "targetRef": {"kind": "Pod", "name": pod}}
        if ready is not None:
            endpoint["conditions"] = {"ready": ready}
        endpoints.append(endpoint)
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints,
    }


def pod_names(backends: list[Backend]) -> list[str]:
    return sorted(b.name for b in backends)


async def until(condition, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


async def stop(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# ----- one EndpointSlice ------------------------------------------------------------------------


def test_only_ready_endpoints_count_and_an_unset_ready_means_ready():
    found = ready_backends(
        endpoint_slice("s", "llm-active", {"pod-a": True, "pod-b": False, "pod-c": None})
    )
    assert found == [
        Backend("pod-a", "http://10.1.0.1:8000"),
        Backend("pod-c", "http://10.1.0.3:8000"),
    ]


def test_the_http_port_is_used_whatever_its_position():
    one = endpoint_slice("s", "llm-active", {"pod-a": True})
    one["ports"] = [{"name": "metrics", "port": 9090}, {"name": "http", "port": 8000}]
    assert ready_backends(one) == [Backend("pod-a", "http://10.1.0.1:8000")]
    one["ports"] = [{"name": "web", "port": 8080}]  # no `http`: the only port there is
    assert ready_backends(one) == [Backend("pod-a", "http://10.1.0.1:8080")]
    one["ports"] = None  # no port yet: nothing to send to
    assert ready_backends(one) == []


def test_ipv6_addresses_are_bracketed_and_an_endpoint_without_a_pod_is_named_by_address():
    one = endpoint_slice("s", "llm-active", {"pod-a": True})
    one["addressType"] = "IPv6"
    one["endpoints"] = [{"addresses": ["fd00::7"], "conditions": {"ready": True}}]
    assert ready_backends(one) == [Backend("fd00::7", "http://[fd00::7]:8000")]


def test_a_slice_set_follows_adds_changes_and_deletes_over_several_slices():
    slices = SliceSet()
    slices.apply("ADDED", endpoint_slice("llm-active-1", "llm-active", {"pod-a": True}))
    slices.apply("ADDED", endpoint_slice("llm-active-2", "llm-active", {"pod-b": True}))
    slices.apply("ADDED", endpoint_slice("llm-standby-1", "llm-standby", {"pod-s": True}))
    assert pod_names(slices.ready("llm-active")) == ["pod-a", "pod-b"]
    assert pod_names(slices.ready("llm-standby")) == ["pod-s"]

    slices.apply("MODIFIED", endpoint_slice("llm-active-1", "llm-active", {"pod-a": False}))
    assert pod_names(slices.ready("llm-active")) == ["pod-b"]
    slices.apply("DELETED", endpoint_slice("llm-active-2", "llm-active", {}))
    assert slices.ready("llm-active") == []
    assert pod_names(slices.ready("llm-standby")) == ["pod-s"]
    assert slices.ready("llm") == []


def test_a_pod_in_two_slices_of_one_service_counts_once():
    slices = SliceSet()
    slices.apply("ADDED", endpoint_slice("llm-active-1", "llm-active", {"pod-a": True}))
    slices.apply("ADDED", endpoint_slice("llm-active-2", "llm-active", {"pod-a": True}))
    assert pod_names(slices.ready("llm-active")) == ["pod-a"]


# ----- EndpointSliceDiscovery against a fake API server -----------------------------------------


class FakeKubeApi:
    """Lists and watches EndpointSlices as the API server does: each list answers the next of
    `lists` (items, resourceVersion); each watch streams what the test puts in its queue
    (None ends it; a number answers that HTTP status instead). Every call is recorded."""

    def __init__(self) -> None:
        self.lists: list[tuple[list[dict], str]] = []
        self.watches: list[asyncio.Queue] = []
        self.calls: list[dict] = []  # query, authorization
        self.call_made = asyncio.Event()
        app = web.Application()
        app.router.add_get(SLICES_PATH, self._endpointslices)
        self.server = TestServer(app)

    def next_watch(self) -> asyncio.Queue:
        queue = asyncio.Queue()
        self.watches.append(queue)
        return queue

    async def _endpointslices(self, request: web.Request) -> web.StreamResponse:
        self.calls.append(
            dict(request.query) | {"authorization": request.headers.get("Authorization")}
        )
        self.call_made.set()
        if request.query.get("watch") != "1":
            items, version = self.lists.pop(0)
            return web.json_response(
                {
                    "kind": "EndpointSliceList",
                    "metadata": {"resourceVersion": version},
                    "items": items,
                }
            )
        queue = self.watches[sum(1 for c in self.calls if c.get("watch") == "1") - 1]
        first = await queue.get()
        if isinstance(first, int):
            return web.json_response({"kind": "Status", "code": first}, status=first)
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        event = first
        while event is not None:
            await response.write(json.dumps(event).encode() + b"\n")
            event = await queue.get()
        return response


@pytest.fixture
async def kube(tmp_path):
    fake = FakeKubeApi()
    token = tmp_path / "token"
    token.write_text("token-1\n")
    async with fake.server, aiohttp.ClientSession() as session:
        api = KubeApi(str(fake.server.make_url("")), session, token_file=token)
        yield fake, api, token
        for queue in fake.watches:  # end the streams still open, so the server stops at once
            queue.put_nowait(None)


class Replicas:
    def __init__(self) -> None:
        self.seen: list[int] = []

    def __call__(self, ready: int) -> None:
        self.seen.append(ready)


async def test_discovery_lists_watches_and_lists_again_when_the_watch_expires(kube, monkeypatch):
    monkeypatch.setattr(
        pagoda_gateway.discovery, "RETRY_S", 60
    )  # an expired watch lists again at once
    fake, api, token = kube
    fake.lists.append(
        (
            [
                endpoint_slice("llm-active-x", "llm-active", {"pod-a": True, "pod-b": False}),
                endpoint_slice("llm-standby-x", "llm-standby", {"pod-s": True}),
                endpoint_slice("llm-x", "llm", {"gw-1": True, "gw-2": True, "gw-3": False}),
            ],
            "100",
        )
    )
    watch = fake.next_watch()
    pool, replicas = BackendPool(), Replicas()
    discovery = EndpointSliceDiscovery(api, NAMESPACE, NAME, pool, replicas)
    task = asyncio.create_task(discovery.run())
    try:
        await asyncio.wait_for(discovery.synced.wait(), 5)
        assert pod_names(pool.ready("active")) == ["pod-a"]
        assert pod_names(pool.ready("standby")) == ["pod-s"]
        assert replicas.seen[-1] == 2
        assert fake.calls[0] == {"labelSelector": SELECTOR, "authorization": "Bearer token-1"}

        def watched(event_type: str, obj: dict) -> None:
            watch.put_nowait({"type": event_type, "object": obj})

        both = {"pod-a": True, "pod-b": True}
        watched("MODIFIED", endpoint_slice("llm-active-x", "llm-active", both))
        await until(lambda: pod_names(pool.ready("active")) == ["pod-a", "pod-b"])
        assert fake.calls[1] == {
            "watch": "1",
            "resourceVersion": "100",
            "allowWatchBookmarks": "true",
            "labelSelector": SELECTOR,
            "timeoutSeconds": "300",
            "authorization": "Bearer token-1",
        }
        watched("ADDED", endpoint_slice("llm-active-y", "llm-active", {"pod-c": None}))
        await until(lambda: pod_names(pool.ready("active")) == ["pod-a", "pod-b", "pod-c"])
        watched("BOOKMARK", {"kind": "EndpointSlice", "metadata": {"resourceVersion": "105"}})
        watched("DELETED", endpoint_slice("llm-active-x", "llm-active", {}))
        await until(lambda: pod_names(pool.ready("active")) == ["pod-c"])
        three = {"gw-1": True, "gw-2": True, "gw-3": True}
        watched("MODIFIED", endpoint_slice("llm-x", "llm", three))
        await until(lambda: replicas.seen[-1] == 3)

        # The watch is too old: the discovery lists again (with the token as it is now) and
        # believes that list, not what it had: the primaries' slice went away meanwhile.
        token.write_text("token-2\n")
        fake.lists.append(
            (
                [
                    endpoint_slice("llm-standby-x", "llm-standby", {"pod-s": True, "pod-t": True}),
                    endpoint_slice("llm-x", "llm", {"gw-1": True}),
                ],
                "200",
            )
        )
        second = fake.next_watch()
        watch.put_nowait({"type": "ERROR", "object": {"kind": "Status", "code": 410}})
        await until(lambda: pod_names(pool.ready("standby")) == ["pod-s", "pod-t"])
        assert pool.ready("active") == []
        assert pool.candidates()[0] == "standby"
        assert replicas.seen[-1] == 1
        await until(lambda: len(fake.calls) == 4)
        assert fake.calls[2] == {"labelSelector": SELECTOR, "authorization": "Bearer token-2"}
        assert fake.calls[3]["resourceVersion"] == "200"

        pod_d = endpoint_slice("llm-active-z", "llm-active", {"pod-d": True})
        second.put_nowait({"type": "ADDED", "object": pod_d})
        await until(lambda: pod_names(pool.ready("active")) == ["pod-d"])
    finally:
        await stop(task)


async def test_a_watch_that_times_out_resumes_from_the_last_version_without_a_list(kube):
    fake, api, _ = kube
    fake.lists.append(([endpoint_slice("llm-active-x", "llm-active", {"pod-a": True})], "100"))
    first, second = fake.next_watch(), fake.next_watch()
    pool = BackendPool()
    discovery = EndpointSliceDiscovery(api, NAMESPACE, NAME, pool, Replicas())
    task = asyncio.create_task(discovery.run())
    try:
        await asyncio.wait_for(discovery.synced.wait(), 5)
        bookmark = {"kind": "EndpointSlice", "metadata": {"resourceVersion": "150"}}
        first.put_nowait({"type": "BOOKMARK", "object": bookmark})
        first.put_nowait(None)  # the server ends the watch (its timeoutSeconds)
        await until(lambda: len(fake.calls) == 3)
        assert fake.calls[2]["watch"] == "1" and fake.calls[2]["resourceVersion"] == "150"
        added = endpoint_slice("llm-active-y", "llm-active", {"pod-b": True})
        second.put_nowait({"type": "ADDED", "object": added})
        await until(lambda: pod_names(pool.ready("active")) == ["pod-a", "pod-b"])
    finally:
        await stop(task)


async def test_a_watch_refused_with_410_lists_again_at_once(kube, monkeypatch):
    monkeypatch.setattr(pagoda_gateway.discovery, "RETRY_S", 60)
    fake, api, _ = kube
    fake.lists += [
        ([endpoint_slice("llm-active-x", "llm-active", {"pod-a": True})], "100"),
        ([endpoint_slice("llm-active-x", "llm-active", {"pod-b": True})], "300"),
    ]
    fake.next_watch().put_nowait(410)
    fake.next_watch()
    pool = BackendPool()
    task = asyncio.create_task(EndpointSliceDiscovery(api, NAMESPACE, NAME, pool, Replicas()).run())
    try:
        await until(lambda: pod_names(pool.ready("active")) == ["pod-b"])
        await until(lambda: len(fake.calls) == 4)
        assert fake.calls[3]["resourceVersion"] == "300"
    finally:
        await stop(task)


async def test_a_failing_watch_is_retried(kube, monkeypatch):
    monkeypatch.setattr(pagoda_gateway.discovery, "RETRY_S", 0.01)
    fake, api, _ = kube
    fake.lists += [
        ([endpoint_slice("llm-active-x", "llm-active", {"pod-a": True})], "100"),
        ([endpoint_slice("llm-active-x", "llm-active", {"pod-b": True})], "101"),
    ]
    fake.next_watch().put_nowait({"type": "ERROR", "object": {"code": 500, "message": "boom"}})
    fake.next_watch()
    pool = BackendPool()
    task = asyncio.create_task(EndpointSliceDiscovery(api, NAMESPACE, NAME, pool, Replicas()).run())
    try:
        await until(lambda: pod_names(pool.ready("active")) == ["pod-b"])
    finally:
        await stop(task)


async def test_the_api_client_reads_the_token_file_for_every_call(kube):
    fake, api, token = kube
    fake.lists += [([], "1"), ([], "2")]
    await api.get(SLICES_PATH)
    token.write_text("token-2\n")
    await api.get(SLICES_PATH)
    assert [call["authorization"] for call in fake.calls] == ["Bearer token-1", "Bearer token-2"]


async def test_without_a_token_file_no_authorization_is_sent(kube):
    fake, _, _ = kube
    fake.lists.append(([], "1"))
    async with aiohttp.ClientSession() as session:
        assert await KubeApi(str(fake.server.make_url("")), session).get(SLICES_PATH) == {
            "kind": "EndpointSliceList",
            "metadata": {"resourceVersion": "1"},
            "items": [],
        }
    assert fake.calls[0]["authorization"] is None


# ----- StaticDiscovery --------------------------------------------------------------------------


class FakeWorker:
    """A /ready that answers `status`."""

    def __init__(self) -> None:
        self.status = 200
        app = web.Application()
        app.router.add_get("/ready", self._ready)
        self.server = TestServer(app)

    async def _ready(self, request: web.Request) -> web.Response:
        return web.Response(status=self.status)

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def name(self) -> str:
        return self.url.removeprefix("http://")


async def test_static_backends_are_ready_while_their_ready_answers_200(unused_tcp_port):
    first, second = FakeWorker(), FakeWorker()
    closed = f"http://127.0.0.1:{unused_tcp_port}"  # nothing listens there
    async with first.server, second.server, aiohttp.ClientSession() as session:
        pool = BackendPool()
        discovery = StaticDiscovery(
            pool, [first.url, closed], [second.url], session, interval_s=0.02
        )
        task = asyncio.create_task(discovery.run())
        try:
            await asyncio.wait_for(discovery.synced.wait(), 5)
            assert pool.ready("active") == [Backend(first.name, first.url)]
            assert pool.ready("standby") == [Backend(second.name, second.url)]

            first.status = 503
            await until(lambda: pool.ready("active") == [])
            assert pool.candidates()[0] == "standby"
            second.status = 503
            await until(lambda: pool.ready("standby") == [])
            first.status = 200
            await until(lambda: pool.ready("active") == [Backend(first.name, first.url)])
        finally:
            await stop(task)


async def test_a_static_backend_given_with_a_trailing_slash_still_works():
    worker = FakeWorker()
    async with worker.server, aiohttp.ClientSession() as session:
        pool = BackendPool()
        discovery = StaticDiscovery(pool, [worker.url + "/"], [], session, interval_s=0.02)
        task = asyncio.create_task(discovery.run())
        try:
            await asyncio.wait_for(discovery.synced.wait(), 5)
            assert pool.ready("active") == [Backend(worker.name, worker.url)]
        finally:
            await stop(task)
