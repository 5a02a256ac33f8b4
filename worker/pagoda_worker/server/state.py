"""What the server knows about itself: its phase, the loaded model, requests in flight.

The server answers from the moment it binds: while the model loads and warms up, /health
and /ready say so with 503 (a startup probe gives loading its own budget), and the API
answers 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from aiohttp import web

from pagoda_worker.engine.async_engine import AsyncLLMEngine
from pagoda_worker.server.audit import AuditLog
from pagoda_worker.server.auth import KeyChecker
from pagoda_worker.server.errors import APIError
from pagoda_worker.server.metrics import ServerMetrics, WorkerGauges
from pagoda_worker.server.prompts import max_prompt_chars
from pagoda_worker.server.readiness import Readiness
from pagoda_worker.server.token_text import TokenText
from pagoda_worker.server.tool_parsers import parser_for

TOKENIZER_THREADS = 4  # one huge prompt must not hold up everyone else's tokenizing


class Phase(StrEnum):
    LOADING = "loading"
    SERVING = "serving"
    DRAINING = "draining"


class LoadedModel:
    """The engine and everything that needs it loaded."""

    def __init__(
        self,
        engine: AsyncLLMEngine,
        served_name: str,
        metrics: ServerMetrics,
        readiness: Readiness,
    ) -> None:
        self.engine = engine
        self.name = served_name
        self.metrics = metrics
        self.readiness = readiness
        self.tokenizer = engine.tokenizer
        self.max_model_len: int = engine.max_model_len
        self.created = int(time.time())
        # No text longer than this can fit the context window: refused before tokenizing.
        self.max_prompt_chars = max_prompt_chars(self.tokenizer, self.max_model_len)
        # Tokenizing long prompts takes a while: off the event loop, on a few threads.
        self._tokenizer_threads = ThreadPoolExecutor(
            TOKENIZER_THREADS, thread_name_prefix="tokenizer"
        )
        self.token_text = TokenText(self.tokenizer)
        self.tool_parser = parser_for(_model_type(self.tokenizer))  # for tool_choice auto

    async def tokenize(self, fn, *args):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._tokenizer_threads, fn, *args)

    def close(self) -> None:
        self._tokenizer_threads.shutdown(wait=False, cancel_futures=True)


def _model_type(tokenizer) -> str | None:
    """config.json's model_type, from the model folder the tokenizer was loaded from."""
    try:
        config = json.loads((Path(tokenizer.name_or_path) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return config.get("model_type")


@dataclass
class WorkerState:
    keys: KeyChecker
    audit: AuditLog
    max_body_bytes: int
    body_timeout_s: float  # to receive a whole request body
    write_timeout_s: float  # for one streamed event to leave, to a client that stopped reading
    stream_coalesce: bool  # a stream that fell behind catches up in one chunk
    phase: Phase = Phase.LOADING
    model: LoadedModel | None = None
    in_flight: int = 0
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._idle.set()

    def serve(self, model: LoadedModel) -> None:
        self.model = model
        model.metrics.read_gauges_from(self.gauges)
        if self.phase is Phase.LOADING:
            self.phase = Phase.SERVING

    def loaded(self) -> LoadedModel:
        if self.model is None:
            raise APIError(503, "the model is still loading", error_type="service_unavailable")
        return self.model

    # ----- probes -----

    def is_alive(self) -> bool:
        """No engine loop yet while loading: Kubernetes' startup probe waits for this."""
        return self.model is not None and self.model.engine.is_healthy()

    def not_ready_reasons(self) -> list[str]:
        if self.model is None:
            return ["the model is loading"]
        reasons = self.model.readiness.not_ready_reasons()
        if self.phase is Phase.DRAINING:
            reasons.append("draining")
        return reasons

    def gauges(self) -> WorkerGauges:
        """Read at scrape time; /metrics answers only once a model is served."""
        model = self.loaded()
        engine = model.engine
        return WorkerGauges(
            stats=engine.stats,
            heartbeat_age_s=engine.heartbeat_age(),
            slowest_pass=engine.slowest_pass,
            most_pass_cpu_s=engine.most_pass_cpu_s,
            generation_age_s=model.readiness.generation_age(),
            ready=not self.not_ready_reasons(),
        )

    # ----- drain -----

    def start_draining(self) -> None:
        self.phase = Phase.DRAINING

    def refuse_if_draining(self) -> None:
        if self.phase is Phase.DRAINING:
            if self.model:
                self.model.metrics.reject("draining")
            raise APIError(
                503,
                "the server is shutting down",
                error_type="service_unavailable",
                code="draining",
            )

    @contextlib.contextmanager
    def generating(self):
        """A generation in flight, from its submission to its last byte: what a drain waits
        for. Reading the body and tokenizing come before, so a stalled upload holds no drain."""
        self.refuse_if_draining()
        self.in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """True when every in-flight request finished within the timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
            return True
        except TimeoutError:
            return False


STATE = web.AppKey("state", WorkerState)
