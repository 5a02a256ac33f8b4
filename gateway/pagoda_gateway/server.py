"""The gateway's life: wire the parts, bind, serve until SIGTERM, drain, stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web
from pagoda_worker.server.access_log import JsonAccessLogger

from .app import GatewayState, build_app
from .backends import BackendPool
from .discovery import EndpointSliceDiscovery, StaticDiscovery
from .hold_queue import HoldQueue
from .kube_api import KubeApi
from .limits import TenantLimits
from .load_scraper import LoadScraper
from .metrics import GatewayMetrics
from .proxy import Forwarder, ProxySettings
from .routing import Router
from .tenants import TenantKeys, TenantsFileError, load_tenants_file

log = logging.getLogger("pagoda.gateway")


@dataclass
class GatewaySettings:
    host: str = "127.0.0.1"
    port: int = 8000
    backends: list[str] = field(default_factory=list)  # static, the active role
    standby_backends: list[str] = field(default_factory=list)
    discover: str | None = None  # NAMESPACE/NAME: EndpointSlices in a cluster
    tenants_file: Path | None = None
    routing: str = "prefix"
    prefix_chars: int = 256
    hold_queue_size: int = 256
    hold_timeout_s: float = 30.0
    scrape_interval_s: float = 1.0
    key_reload_s: float = 10.0
    drain_timeout_s: float = 25.0
    # Request headers must arrive this soon after the connection opens or the last response;
    # the body within body_timeout_s (the worker's own limits, so a slow client holds neither).
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_body_bytes: int = 4 * 2**20
    proxy: ProxySettings = field(default_factory=ProxySettings)


class Gateway:
    def __init__(self, settings: GatewaySettings) -> None:
        if bool(settings.discover) == bool(settings.backends or settings.standby_backends):
            raise ValueError("give either --discover or --backend (with any --standby-backend)")
        self.settings = settings
        entries = load_tenants_file(settings.tenants_file).tenants if settings.tenants_file else []
        self.keys = TenantKeys(entries)
        self.limits = TenantLimits(self.keys.tenants)
        self.pool = BackendPool()
        self.metrics = GatewayMetrics()
        self.replicas = 1
        self.url = ""
        self._tasks: list[asyncio.Task] = []
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.state: GatewayState | None = None

    async def start(self) -> str:
        try:
            return await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> str:
        s = self.settings
        # Workers are few and long-lived: keep connections to them open (no per-host limit).
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        self._session = session  # stop() closes it
        hold = HoldQueue(self.pool, s.hold_queue_size, s.hold_timeout_s)
        forwarder = Forwarder(self.pool, Router(s.routing), hold, session, s.proxy)
        state = GatewayState(
            self.keys, self.limits, forwarder, self.metrics, s.prefix_chars, s.body_timeout_s
        )
        self.state = state
        self.metrics.watch(
            self.pool, lambda: hold.waiting, lambda: forwarder.retries, lambda: self.replicas
        )
        discovery = self._discovery(session)
        self._spawn(discovery.run(), LoadScraper(self.pool, session, s.scrape_interval_s).run())
        if self.keys.enabled:
            self._spawn(self._reload_keys())
        self._runner = web.AppRunner(
            build_app(state, s.max_body_bytes),
            access_log_class=JsonAccessLogger,
            access_log=logging.getLogger("pagoda.access"),
            handler_cancellation=True,  # a client that leaves cancels its handler
            shutdown_timeout=1.0,
            keepalive_timeout=s.header_timeout_s,  # aiohttp: until headers arrive
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, s.host, s.port).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        self._spawn(_ready_when(state, discovery.synced))
        return self.url

    def _discovery(
        self, session: aiohttp.ClientSession
    ) -> StaticDiscovery | EndpointSliceDiscovery:
        s = self.settings
        if s.discover:
            namespace, _, name = s.discover.partition("/")
            api = KubeApi.in_cluster(session)
            return EndpointSliceDiscovery(api, namespace, name, self.pool, self._set_replicas)
        return StaticDiscovery(
            self.pool, s.backends, s.standby_backends, session, s.scrape_interval_s
        )

    def _set_replicas(self, ready: int) -> None:
        self.replicas = max(1, ready)
        self.limits.set_replicas(self.replicas)

    def _spawn(self, *coroutines) -> None:
        for coroutine in coroutines:
            task = asyncio.create_task(coroutine)
            task.add_done_callback(_report_crash)
            self._tasks.append(task)

    async def _reload_keys(self) -> None:
        while True:
            await asyncio.sleep(self.settings.key_reload_s)
            try:
                self.keys.reload()
            except TenantsFileError as e:
                log.warning("tenant keys not reloaded, the ones in use stay: %s", e)

    async def drain(self) -> None:
        """Not ready at once (the Service stops sending), then in-flight requests finish."""
        state = self.state
        assert state is not None, "drain() before start()"
        state.ready = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.drain_timeout_s
        while state.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if state.in_flight:
            log.warning("drain deadline passed with %d requests in flight", state.in_flight)
        await self.stop()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._runner:
            await self._runner.cleanup()
        if self._session:
            await self._session.close()


async def _ready_when(state: GatewayState, synced: asyncio.Event) -> None:
    await synced.wait()
    state.ready = True


def _report_crash(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("gateway task %s stopped", task.get_coro(), exc_info=task.exception())


async def serve_until_signalled(gateway: Gateway, progress) -> None:
    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, signalled.set)
    url = await gateway.start()
    progress(f"gateway listening on {url}/v1 (probes {url}/health, {url}/ready)")
    await signalled.wait()
    progress("shutting down: draining in-flight requests")
    await gateway.drain()
