"""The server's life: bind, load the model, serve, drain on SIGTERM, stop.

It binds before loading so that probes get answers from the start (503 "loading" until the
model is loaded and warm); the model loads in the engine's own process while the event loop
answers. Readiness (readiness.py) warms the engine up, then keeps proving it works.

The drain ends when every generation has finished, at the drain deadline, or at a second
SIGTERM/SIGINT. Generations still running then are cut: each stream gets an error event and
`[DONE]` (a whole response, a 503) during a short grace, then the connections close.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from pagoda_worker.engine.async_engine import AsyncEngineOptions, AsyncLLMEngine
from pagoda_worker.engine.config import EngineConfig
from pagoda_worker.server import faults
from pagoda_worker.server.access_log import JsonAccessLogger
from pagoda_worker.server.app import build_app
from pagoda_worker.server.audit import AuditLog
from pagoda_worker.server.auth import KeyChecker
from pagoda_worker.server.metrics import ServerMetrics
from pagoda_worker.server.readiness import Readiness, ReadinessSettings
from pagoda_worker.server.state import LoadedModel, WorkerState

log = logging.getLogger("pagoda.server")

CUT_GRACE_S = 1.0  # for cut generations to send their error events before connections close


@dataclass
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    served_model_name: str | None = None  # defaults to the folder's name or the Hub id
    api_keys: list[str] = field(default_factory=list)
    max_body_bytes: int = 4 * 2**20
    drain_timeout_s: float = 25.0  # under Kubernetes' default 30 s grace period
    # Request headers must arrive this soon after the connection opens or the last response
    # (idle keep-alive connections close then too, as uvicorn's do after 5 s).
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0  # for the whole request body
    write_timeout_s: float = 30.0  # for one streamed event, to a client that stopped reading
    # A stream that fell behind (slow client, busy front end) sends what has piled up as one
    # chunk instead of one per engine step: fewer, larger SSE events (vLLM's stream_interval).
    stream_coalesce: bool = False
    audit_log: bool = False
    engine: AsyncEngineOptions = field(default_factory=AsyncEngineOptions)
    readiness: ReadinessSettings = field(default_factory=ReadinessSettings)  # warm-up, canary
    test_faults: bool = field(default_factory=faults.enabled)  # PAGODA_TEST_FAULTS=1: tests only


class Server:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.state = WorkerState(
            keys=KeyChecker(settings.api_keys),
            audit=AuditLog(settings.audit_log, settings.api_keys),
            max_body_bytes=settings.max_body_bytes,
            body_timeout_s=settings.body_timeout_s,
            write_timeout_s=settings.write_timeout_s,
            stream_coalesce=settings.stream_coalesce,
        )
        self._runner: web.AppRunner | None = None
        self._engine: AsyncLLMEngine | None = None  # from the start of its load
        self._readiness: Readiness | None = None  # once the engine is loaded
        self._hurry = asyncio.Event()  # a second signal: stop draining now
        self.url = ""

    async def bind(self) -> str:
        self._runner = web.AppRunner(
            build_app(self.state, self.settings.test_faults),
            access_log_class=JsonAccessLogger,
            access_log=logging.getLogger("pagoda.access"),
            handler_cancellation=True,  # a client that leaves cancels its handler
            shutdown_timeout=1.0,  # cleanup comes after the drain: no more waiting then
            keepalive_timeout=self.settings.header_timeout_s,  # aiohttp: until headers arrive
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self.url

    async def load(self, config: EngineConfig, progress: Callable[[str], None]) -> LoadedModel:
        progress(f"loading {config.model} in the engine process")
        engine = self._engine = AsyncLLMEngine(config, self.settings.engine)
        await engine.load()
        name = self.settings.served_model_name or engine.model_name
        metrics = ServerMetrics(name, engine.max_model_len)
        engine.observer = metrics
        progress(f"warming up (engine pid {engine.engine_pid}, {engine.max_model_len}-token "
                 f"context, KV cache {engine.kv_capacity_tokens} tokens)")  # fmt: skip
        readiness = self._readiness = Readiness(engine, self.settings.readiness)
        model = LoadedModel(engine, name, metrics, readiness)
        await readiness.warm_up()
        self.state.serve(model)
        return model

    def hurry(self) -> None:
        """End the drain now (a second signal): what still runs is cut."""
        self._hurry.set()

    async def drain(self) -> bool:
        """Refuse new work, let in-flight requests finish (up to the deadline), stop."""
        self.state.start_draining()
        in_flight = self.state.in_flight
        finished = await self._wait_idle_unless_hurried(self.settings.drain_timeout_s)
        if finished:
            log.info("drain: %d requests were in flight; all finished", in_flight)
        else:
            cut = self.state.model.engine.cut_all() if self.state.model else 0
            log.warning(
                "drain: %s; cut %d generation(s) still running (streams end with an error "
                "event and [DONE])",
                "second signal, exiting now" if self._hurry.is_set() else "deadline passed",
                cut,
            )
            await self.state.wait_idle(CUT_GRACE_S)
        await self.stop()
        return finished

    async def _wait_idle_unless_hurried(self, timeout_s: float) -> bool:
        idle = asyncio.create_task(self.state.wait_idle(timeout_s))
        hurry = asyncio.create_task(self._hurry.wait())
        await asyncio.wait([idle, hurry], return_when=asyncio.FIRST_COMPLETED)
        hurry.cancel()
        if not idle.done():
            idle.cancel()
            return False
        return idle.result()

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()
        if self._readiness:
            self._readiness.stop()
        if self._engine:
            await self._engine.stop()
        if self.state.model:
            self.state.model.close()


async def serve_until_signalled(
    server: Server, config: EngineConfig, progress: Callable[[str], None]
) -> None:
    """The main job of `pagoda serve`: returns after SIGTERM or SIGINT and a drain (a signal
    while the model loads stops the engine process at once)."""
    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()

    def on_signal() -> None:
        if signalled.is_set():
            log.warning("a second signal: ending the drain now")
            server.hurry()
        # Not ready at once, before anything else runs: the load balancer must stop sending.
        server.state.start_draining()
        signalled.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    url = await server.bind()
    progress(f"probes answer on {url}/health and {url}/ready")
    loading = asyncio.create_task(server.load(config, progress))
    waiting = asyncio.create_task(signalled.wait())
    await asyncio.wait([loading, waiting], return_when=asyncio.FIRST_COMPLETED)
    if loading.done():
        failure = loading.exception()
        if failure is not None:
            await server.stop()
            raise failure
        model = loading.result()
        progress(f"ready: serving {model.name!r} at {url}/v1")
        await waiting
    else:
        loading.cancel()
    progress("shutting down: draining in-flight requests")
    await server.drain()
