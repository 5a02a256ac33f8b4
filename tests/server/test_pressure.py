"""Behaviour under pressure: clients that leave, a full queue, timeouts, a wedged or failing
engine."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import openai
import pytest
from pagoda_worker.engine.messages import Faults

from tests.server.observe import LONG, scrape, wait_until_idle

pytestmark = pytest.mark.timeout(120)


async def aborted(server) -> float:
    return (await scrape(server)).get(
        ("vllm:request_success_total", (("finished_reason", "abort"),)), 0
    )


async def test_disconnect_mid_stream_aborts_and_frees_blocks(server):
    before = await aborted(server)
    stream = await server.async_client().completions.create(
        model="stories260K", stream=True, **LONG
    )
    chunks = 0
    async for _ in stream:
        chunks += 1
        if chunks == 3:
            break
    assert (await scrape(server))[("vllm:num_requests_running", ())] >= 1
    await stream.close()
    await wait_until_idle(server)
    assert await aborted(server) == before + 1  # aborted, not run to its 480 tokens
    stats = server.state.model.engine.stats
    assert stats.num_free_blocks == stats.num_gpu_blocks


async def test_client_timeout_on_a_whole_response_aborts_too(server):
    before = await aborted(server)
    client = server.async_client(timeout=0.15)
    with pytest.raises(openai.APITimeoutError):
        await client.completions.create(model="stories260K", **LONG)
    await wait_until_idle(server)
    assert await aborted(server) == before + 1


async def test_full_queue_answers_429_with_retry_after(make_server):
    busy = make_server(
        engine_config={"max_num_seqs": 1},
        engine={"max_waiting_seqs": 1},
        readiness={"canary_interval_s": 600},  # no canary in the queue
    )
    client = busy.async_client()
    running = await client.completions.create(model="stories260K", stream=True, **LONG)
    await running.__anext__()  # the first request holds the only batch slot
    waiting = asyncio.create_task(client.completions.create(model="stories260K", **LONG))
    while busy.state.model.engine.stats.num_waiting < 1:
        await asyncio.sleep(0.005)
    reply = await busy.fetch("POST", "/v1/completions", json={"prompt": "x", "max_tokens": 2})
    assert reply.status == 429
    assert int(reply.headers["Retry-After"]) >= 1
    assert reply.json()["error"]["code"] == "queue_full"
    assert (await scrape(busy))[
        ("pagoda:requests_rejected_total", (("reason", "queue_full"),))
    ] == 1
    await running.close()
    waiting.cancel()


async def test_request_timeout_is_a_504_never_a_complete_looking_200(make_server):
    impatient = make_server(engine={"request_timeout_s": 0.2})
    with pytest.raises(openai.APIStatusError) as timed_out:
        await impatient.async_client().completions.create(model="stories260K", **LONG)
    assert timed_out.value.status_code == 504
    assert timed_out.value.body["code"] == "request_timeout"
    assert (await scrape(impatient))[("pagoda:request_timeouts_total", ())] == 1
    await wait_until_idle(impatient)  # aborted: its blocks are back


async def test_request_timeout_ends_a_stream_with_an_error_event(make_server):
    impatient = make_server(engine={"request_timeout_s": 0.3})
    reply = await impatient.fetch(
        "POST", "/v1/completions", json={"prompt": "Once", "max_tokens": 480, "ignore_eos": True,
                                         "stream": True},
    )  # fmt: skip
    events = [line[6:] for line in reply.body.decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == "request_timeout" and error["type"] == "timeout_error"
    finish_reasons = {c["finish_reason"] for e in events[:-2] for c in json.loads(e)["choices"]}
    assert finish_reasons == {None}  # no "abort", nothing that looks like an ending
    stream = await impatient.async_client().completions.create(
        model="stories260K", stream=True, **LONG
    )
    with pytest.raises(openai.APIError, match="timeout"):
        async for _ in stream:
            pass


async def test_a_wedged_engine_fails_health_and_recovers(make_server):
    server = make_server(engine={"heartbeat_timeout_s": 0.3})
    assert (await server.fetch("GET", "/health")).status == 200
    server.engine.set_faults(Faults(hang_s=2.0))  # the next step hangs, as on a stuck device
    request = asyncio.create_task(server.fetch("POST", "/v1/completions", json={"prompt": "x"}))
    await asyncio.sleep(0.8)
    health = await server.fetch("GET", "/health")
    assert health.status == 503 and health.json()["status"] == "unhealthy"
    assert (await server.fetch("GET", "/ready")).status == 503
    assert (await request).status == 200  # the step ends: the loop goes round again
    assert (await server.fetch("GET", "/health")).status == 200


async def test_a_failing_engine_fails_requests_and_health(make_server):
    server = make_server()
    server.engine.set_faults(Faults(fail_after_steps=0, fail_message="device lost"))
    reply = await server.fetch("POST", "/v1/completions", json={"prompt": "x", "max_tokens": 4})
    assert reply.status == 503
    assert "device lost" in reply.json()["error"]["message"]
    health = await server.fetch("GET", "/health")
    assert health.status == 503 and "device lost" in health.json()["error"]
    assert (await server.fetch("GET", "/ready")).status == 503
    again = await server.fetch("POST", "/v1/completions", json={"prompt": "x"})
    assert again.status == 503


async def test_a_failing_engine_ends_streams_with_an_error_event(make_server):
    server = make_server()
    stream = await server.async_client().completions.create(
        model="stories260K", stream=True, **LONG
    )
    await stream.__anext__()
    server.engine.set_faults(Faults(fail_after_steps=0, fail_message="device lost"))
    with pytest.raises(openai.APIError, match="device lost"):
        async for _ in stream:
            pass


async def test_a_dead_engine_process_ends_streams_with_an_error_and_fails_health(make_server):
    """The engine process dies (OOM killer, segfault): nothing hangs, /health fails at once
    (not after the heartbeat timeout), and the kubelet restarts the pod through liveness."""
    server = make_server()
    stream = await server.async_client().completions.create(
        model="stories260K", stream=True, **LONG
    )
    await stream.__anext__()
    os.kill(server.engine.engine_pid, signal.SIGKILL)
    killed = time.monotonic()
    with pytest.raises(openai.APIError, match="engine process exited with code -9"):
        async for _ in stream:
            pass
    health = await server.fetch("GET", "/health")
    assert time.monotonic() - killed < 5  # the heartbeat timeout is 30 s
    assert health.status == 503 and "exited with code -9" in health.json()["error"]
    assert (await server.fetch("GET", "/ready")).status == 503
    again = await server.fetch("POST", "/v1/completions", json={"prompt": "x"})
    assert again.status == 503
