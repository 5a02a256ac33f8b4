"""Live servers on 127.0.0.1 for the server tests.

A server runs the real `Server` (bind, load stories260K, warm up) on an event loop of its
own thread, on a free port; teardown drains and stops it, with timeouts, so a failing test
never leaves one behind.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, replace

import aiohttp
import openai
import pytest
from multidict import CIMultiDict
from pagoda_worker.engine.async_engine import AsyncEngineOptions
from pagoda_worker.engine.config import EngineConfig
from pagoda_worker.server.readiness import ReadinessSettings
from pagoda_worker.server.server import Server, ServerSettings

START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 30


@dataclass
class Reply:
    status: int
    headers: CIMultiDict  # names in any case
    body: bytes

    def json(self):
        return json.loads(self.body)


class RunningServer:
    def __init__(self, settings: ServerSettings, config: EngineConfig) -> None:
        self.server = Server(settings)
        self.config = config
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)

    @property
    def state(self):
        return self.server.state

    @property
    def engine(self):
        """The server's AsyncLLMEngine (tests inject faults into the engine through it)."""
        return self.server.state.model.engine

    def start(self) -> RunningServer:
        self._thread.start()
        if not self._started.wait(START_TIMEOUT_S):
            raise TimeoutError("the test server did not start")
        if self._error:
            raise self._error
        return self

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            self.url = await self.server.bind()
            await self.server.load(self.config, progress=lambda message: None)
        except BaseException as e:
            self._error = e
            self._started.set()
            await self.server.stop()
            return
        self._started.set()
        await self._stop.wait()
        await self.server.drain()

    def stop(self) -> None:
        if self._loop and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(STOP_TIMEOUT_S)
        assert not self._thread.is_alive(), "the test server did not stop"

    async def fetch(self, method: str, path: str, **kwargs) -> Reply:
        """One plain HTTP request, for what the openai client hides (status, headers, body)."""
        timeout = aiohttp.ClientTimeout(total=60)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(method, self.url + path, **kwargs) as response,
        ):
            return Reply(response.status, CIMultiDict(response.headers), await response.read())

    def client(self, **kwargs) -> openai.OpenAI:
        kwargs = {"api_key": "unused", "max_retries": 0, "timeout": 60} | kwargs
        return openai.OpenAI(base_url=self.url + "/v1", **kwargs)

    def async_client(self, **kwargs) -> openai.AsyncOpenAI:
        kwargs = {"api_key": "unused", "max_retries": 0, "timeout": 60} | kwargs
        return openai.AsyncOpenAI(base_url=self.url + "/v1", **kwargs)


def _settings(**overrides) -> ServerSettings:
    engine = replace(AsyncEngineOptions(), **overrides.pop("engine", {}))
    readiness = ReadinessSettings(canary_interval_s=1.0, canary_max_age_s=30.0)
    readiness = replace(readiness, **overrides.pop("readiness", {}))
    defaults = {"port": 0, "drain_timeout_s": 5.0, "engine": engine, "readiness": readiness}
    return ServerSettings(**(defaults | overrides))


@pytest.fixture(scope="session")
def server(stories_dir) -> RunningServer:
    """One server with default settings, shared by the tests that only send requests."""
    running = RunningServer(_settings(), EngineConfig(model=str(stories_dir))).start()
    yield running
    running.stop()


@pytest.fixture
def make_server(stories_dir):
    """A fresh server with its own settings: make_server(engine={...}, readiness={...},
    api_keys=[...])."""
    started: list[RunningServer] = []

    def make(engine_config: dict | None = None, **overrides) -> RunningServer:
        config = EngineConfig(model=str(stories_dir), **(engine_config or {}))
        running = RunningServer(_settings(**overrides), config)
        started.append(running)
        return running.start()

    yield make
    for running in started:
        running.stop()
