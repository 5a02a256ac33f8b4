"""AsyncLLMEngine against scripted engine cores in a real engine process: admission's counts
and the engine's refusals across the process boundary."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from pagoda_worker.engine.async_engine import AsyncEngineOptions, AsyncLLMEngine
from pagoda_worker.engine.config import EngineConfig
from pagoda_worker.engine.errors import InvalidRequest
from pagoda_worker.engine.sampling_params import SamplingParams

from tests.engine.scripted_cores import GATE_VARIABLE

pytestmark = pytest.mark.timeout(60)


@contextlib.asynccontextmanager
async def scripted_engine(core: str, **options):
    engine = AsyncLLMEngine(
        EngineConfig(), AsyncEngineOptions(**options), core=f"tests.engine.scripted_cores:{core}"
    )
    try:
        await engine.load()
        yield engine
    finally:
        await engine.stop()


async def until(condition, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


async def test_an_added_request_counts_as_waiting_when_generate_returns():
    """Admission control reads the stats snapshot: it must already hold the new request,
    or a burst slips past max_waiting_seqs."""
    async with scripted_engine("WaitingCore", request_timeout_s=None) as engine:
        await engine.generate([[1, 2]], SamplingParams(max_tokens=1))
        assert engine.stats.num_waiting == 1


async def test_a_refusal_comes_back_as_the_engines_field_and_reason():
    """The core refuses the call's second prompt: generate raises InvalidRequest with the
    core's own field and reason, carried across the process boundary as they were."""
    async with scripted_engine("WaitingCore", request_timeout_s=None) as engine:
        with pytest.raises(InvalidRequest) as refused:
            await engine.generate([[1], []], SamplingParams(max_tokens=1))
        assert (refused.value.field, refused.value.reason) == (
            "prompt",
            "must contain at least one token",
        )
        assert str(refused.value) == "prompt: must contain at least one token"


async def test_a_call_added_over_several_passes_is_counted_once(tmp_path, monkeypatch):
    """One request per pass: while a 3-prompt call is half in the engine, its sequences count
    once (the stats hold the added one, the call the rest), so 3 + 1 fits 4 waiting slots."""
    gate = tmp_path / "gate"
    monkeypatch.setenv(GATE_VARIABLE, str(gate))  # the engine process inherits it
    params = SamplingParams(max_tokens=1)
    async with scripted_engine(
        "GatedCore", max_waiting_seqs=4, command_budget_s=0.0, request_timeout_s=None
    ) as engine:
        try:
            big = asyncio.create_task(engine.generate([[1], [0], [2]], params))
            await until(lambda: engine.stats.num_waiting == 1)  # [1] is in, [0] holds the loop
            small = asyncio.create_task(engine.generate([[3]], params))
            await asyncio.sleep(0.05)
            gate.touch()
            await big
            await small  # counting [1] twice (1 + 3 + 1 > 4) refused it: QueueFullError
            await until(lambda: engine.stats.num_waiting == 4)
        finally:
            gate.touch()
