"""Admission counts sequences (prompts x n), and a huge request never stalls the engine loop:
heartbeat, probes and other clients keep being served while it is admitted or aborted."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.server.observe import LONG, wait_until_idle

pytestmark = pytest.mark.timeout(120)

HUGE_BUT_ALLOWED = {"prompt": ["Once upon a time"] * 32, "n": 64, "max_tokens": 8}  # 2048


async def test_a_request_over_the_sequence_cap_is_a_400_naming_the_limit(make_server):
    server = make_server(engine={"max_seqs_per_request": 100})
    body = {"prompt": ["x"] * 11, "n": 10, "max_tokens": 2}
    reply = await server.fetch("POST", "/v1/completions", json=body)
    assert reply.status == 400
    error = reply.json()["error"]
    assert error["param"] == "n"
    assert "11 prompt(s) x n=10 = 110 sequences" in error["message"]
    assert "at most 100" in error["message"]
    assert server.state.model.engine.stats.num_waiting == 0  # refused before any work


async def test_the_waiting_limit_counts_sequences_not_requests(make_server):
    busy = make_server(
        engine_config={"max_num_seqs": 1},
        engine={"max_waiting_seqs": 4},
        readiness={"canary_interval_s": 600},
    )
    client = busy.async_client()
    running = await client.completions.create(model="stories260K", stream=True, **LONG)
    await running.__anext__()  # holds the only batch slot: the rest wait
    # One call can never fit four waiting slots with five sequences: bad request, not "later".
    too_big = await busy.fetch("POST", "/v1/completions", json={"prompt": "x", "n": 5})
    assert too_big.status == 400
    waiting = asyncio.create_task(
        client.completions.create(model="stories260K", n=3, **LONG)
    )  # three sequences wait
    while busy.state.model.engine.stats.num_waiting < 3:
        await asyncio.sleep(0.005)
    reply = await busy.fetch("POST", "/v1/completions", json={"prompt": "x", "n": 2})
    assert reply.status == 429  # 3 + 2 > 4, though only one request waits
    assert reply.json()["error"]["code"] == "queue_full"
    fits = await busy.fetch("POST", "/v1/completions", json={"prompt": "x", "max_tokens": 1})
    assert fits.status == 200  # 3 + 1 fits
    await running.close()
    waiting.cancel()


async def watch_health(server, stop: asyncio.Event) -> list[float]:
    """/health latencies, polled every 20 ms until stopped; any failure fails the test."""
    latencies = []
    while not stop.is_set():
        started = time.monotonic()
        reply = await server.fetch("GET", "/health")
        assert reply.status == 200, reply.body
        latencies.append(time.monotonic() - started)
        await asyncio.sleep(0.02)
    return latencies


async def test_a_huge_request_admitted_then_abandoned_never_stalls_the_loop(make_server):
    server = make_server(engine={"heartbeat_timeout_s": 1.0})
    engine = server.state.model.engine
    stop = asyncio.Event()
    health = asyncio.create_task(watch_health(server, stop))
    for _ in range(2):  # admitted, then the client leaves: a full abort each time
        stream = await server.async_client().completions.create(
            model="stories260K", stream=True, **HUGE_BUT_ALLOWED
        )
        await stream.__anext__()
        other = await server.fetch("POST", "/v1/completions", json={"prompt": "x", "max_tokens": 2})
        assert other.status in (200, 429)  # served, or told to come back: never left hanging
        await stream.close()
    await wait_until_idle(server, timeout_s=30)
    stop.set()
    latencies = await health
    print(
        f"\nlongest engine-loop pass {engine.slowest_pass.describe()}; "
        f"/health polled {len(latencies)} times, slowest {max(latencies) * 1000:.1f} ms"
    )
    # Goal: < 100 ms. The engine process shares this machine's cores with the test's own
    # client and the front end, so the bound is generous; test_soak.py measures a real
    # `pagoda serve`.
    assert engine.slowest_pass.wall_s < 1.0
    stats = engine.stats
    assert stats.num_free_blocks == stats.num_gpu_blocks
