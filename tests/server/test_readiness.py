"""Readiness against a scripted engine core in a real engine process: canaries that never
come back."""

from __future__ import annotations

import asyncio

import pytest
from pagoda_worker.engine.async_engine import AsyncLLMEngine
from pagoda_worker.engine.config import EngineConfig
from pagoda_worker.server.readiness import Readiness, ReadinessSettings

pytestmark = pytest.mark.timeout(60)

WAITING_CORE = "tests.engine.scripted_cores:WaitingCore"  # answers the warm-up canary only


async def test_a_canary_that_times_out_is_aborted():
    """A stuck canary must not stay in the engine, holding a batch slot and KV blocks: with
    canaries every 10 ms that time out after 0.2 s, at most one is ever waiting."""
    engine = AsyncLLMEngine(EngineConfig(), core=WAITING_CORE)
    try:
        await engine.load()
        settings = ReadinessSettings(canary_interval_s=0.01, canary_timeout_s=0.2)
        readiness = Readiness(engine, settings)
        await readiness.warm_up()
        try:
            seen = []
            async with asyncio.timeout(2):
                while len(seen) < 100:
                    seen.append(engine.stats.num_waiting)
                    await asyncio.sleep(0.01)
            assert max(seen) == 1  # never two: each stuck canary was aborted before the next
        finally:
            readiness.stop()
    finally:
        await engine.stop()
