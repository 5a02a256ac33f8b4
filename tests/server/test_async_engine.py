"""AsyncLLMEngine against a scripted engine: the event loop / engine thread hand-offs."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

import pytest

from worker.engine.async_engine import AsyncEngineOptions, AsyncLLMEngine
from worker.engine.outputs import CompletionOutput, FinishReason, RequestMetrics, RequestOutput
from worker.engine.sampling_params import SamplingParams

pytestmark = pytest.mark.timeout(30)


@dataclass
class Stats:
    num_waiting: int


CANARY_PROMPT = [9]


class Tokenizer:
    def encode(self, text: str) -> list[int]:
        return CANARY_PROMPT


def one_token_output(request_id: str, prompt: list[int]) -> RequestOutput:
    completion = CompletionOutput(0, [5], "x", [5], "x", None, None, FinishReason.LENGTH)
    return RequestOutput(request_id, prompt, [completion], True, 0, RequestMetrics(time.time()))


class WaitingEngine:
    """Canaries get their token at once; other requests wait forever. Its stats are slow to
    read, as a busy engine's are."""

    def __init__(self) -> None:
        self.tokenizer = Tokenizer()
        self.waiting: list[str] = []
        self.canaries: list[str] = []
        self.answers_canaries = True
        self.aborted: list[str] = []

    def add_request(self, prompt, params, request_id, arrival_time) -> str:
        answered = prompt == CANARY_PROMPT and self.answers_canaries
        (self.canaries if answered else self.waiting).append(request_id)
        return request_id

    def abort_request(self, request_id: str) -> None:
        self.waiting.remove(request_id)
        self.aborted.append(request_id)

    def has_unfinished_requests(self) -> bool:
        return bool(self.canaries)

    def step(self, laps=None) -> list[RequestOutput]:
        outputs = [one_token_output(rid, CANARY_PROMPT) for rid in self.canaries]
        self.canaries.clear()
        return outputs

    def stats(self) -> Stats:
        time.sleep(0.05)
        return Stats(num_waiting=len(self.waiting))


async def test_an_added_request_counts_as_waiting_when_generate_returns():
    """Admission control reads the stats snapshot: it must already hold the new request,
    or a burst slips past max_waiting_seqs."""
    engine = AsyncLLMEngine(WaitingEngine(), AsyncEngineOptions(request_timeout_s=None))
    await engine.start()
    try:
        await engine.generate([[1, 2]], SamplingParams(max_tokens=1))
        assert engine.stats.num_waiting == 1
    finally:
        await engine.stop()


async def test_a_canary_that_times_out_is_aborted():
    """A stuck canary must not stay in the engine, holding a batch slot and KV blocks."""
    fake = WaitingEngine()
    options = AsyncEngineOptions(canary_interval_s=0.01, canary_timeout_s=0.3)
    engine = AsyncLLMEngine(fake, options)
    await engine.start()
    try:
        fake.answers_canaries = False
        async with asyncio.timeout(5):
            while not fake.aborted:
                await asyncio.sleep(0.01)
        assert fake.waiting == []
    finally:
        await engine.stop()


class GatedEngine(WaitingEngine):
    """Holds the engine thread inside add_request for the prompt [0] until `gate` opens."""

    def __init__(self) -> None:
        super().__init__()
        self.held, self.gate = threading.Event(), threading.Event()

    def add_request(self, prompt, params, request_id, arrival_time) -> str:
        if prompt == [0]:
            self.held.set()
            self.gate.wait(10)
        return super().add_request(prompt, params, request_id, arrival_time)


async def test_a_call_added_over_several_passes_is_counted_once():
    """One request per pass: while a 3-prompt call is half in the engine, its sequences count
    once (the stats hold the added one, the call the rest), so 3 + 1 fits 4 waiting slots."""
    fake = GatedEngine()
    options = AsyncEngineOptions(max_waiting_seqs=4, command_budget_s=0.0, request_timeout_s=None)
    engine = AsyncLLMEngine(fake, options)
    await engine.start()
    params = SamplingParams(max_tokens=1)
    try:
        big = asyncio.create_task(engine.generate([[1], [0], [2]], params))
        async with asyncio.timeout(5):
            while not fake.held.is_set():  # [1] is in the engine, [0] holds its thread
                await asyncio.sleep(0.01)
        await asyncio.sleep(0)  # the engine thread's hand-over of [1] runs first
        assert engine.stats.num_waiting == 1
        small = asyncio.create_task(engine.generate([[3]], params))
        await asyncio.sleep(0.05)
        fake.gate.set()
        await big
        await small  # counting [1] twice (1 + 3 + 1 > 4) refused it: QueueFullError
        assert engine.stats.num_waiting == 4
    finally:
        fake.gate.set()
        await engine.stop()
