"""/metrics parses as Prometheus text, under vLLM's names, and counts what was sent."""

from __future__ import annotations

import asyncio

import pytest
from pagoda_worker.server.metrics import token_buckets
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.timeout(120)

VLLM_NAMES = {
    "vllm:num_requests_running": "gauge",
    "vllm:num_requests_waiting": "gauge",
    "vllm:kv_cache_usage_perc": "gauge",
    "vllm:prefix_cache_queries": "counter",
    "vllm:prefix_cache_hits": "counter",
    "vllm:prompt_tokens": "counter",
    "vllm:generation_tokens": "counter",
    "vllm:num_preemptions": "counter",
    "vllm:request_success": "counter",
    "vllm:time_to_first_token_seconds": "histogram",
    "vllm:inter_token_latency_seconds": "histogram",
    "vllm:e2e_request_latency_seconds": "histogram",
    "vllm:request_queue_time_seconds": "histogram",
    "vllm:request_prompt_tokens": "histogram",
    "vllm:request_generation_tokens": "histogram",
}


async def families(server) -> dict:
    reply = await server.fetch("GET", "/metrics")
    assert reply.headers["Content-Type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(reply.body.decode())}


def sample(family, suffix: str, **labels) -> float:
    matches = [
        s.value
        for s in family.samples
        if s.name == family.name + suffix and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(matches) == 1, (family.name, suffix, labels)
    return matches[0]


async def test_metrics_use_vllm_names_and_types_with_model_name(server):
    await server.async_client().completions.create(model="stories260K", prompt="A", max_tokens=3)
    found = await families(server)
    for name, kind in VLLM_NAMES.items():
        assert found[name].type == kind, name
        assert found[name].samples, name
        assert all(s.labels["model_name"] == "stories260K" for s in found[name].samples), name
    assert found["pagoda:ready"].samples[0].value == 1
    reasons = {s.labels["finished_reason"] for s in found["vllm:request_success"].samples}
    assert reasons == {"stop", "length", "abort"}  # all there from the start, as in vLLM


async def test_counters_match_the_requests_sent(make_server):
    server = make_server()
    client = server.async_client()
    usages = []
    for i in range(3):
        r = await client.completions.create(
            model="stories260K", prompt=f"Once {i}", max_tokens=7, extra_body={"ignore_eos": True}
        )
        usages.append(r.usage)
    stream = await client.chat.completions.create(
        model="stories260K",
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    usages += [chunk.usage async for chunk in stream if chunk.usage]
    text = await client.completions.create(model="stories260K", prompt="Once", temperature=0)
    stop_word = text.choices[0].text.split()[1]
    r = await client.completions.create(
        model="stories260K", prompt="Once", temperature=0, stop=[stop_word]
    )
    assert r.choices[0].finish_reason == "stop"
    usages += [text.usage, r.usage]
    await server.fetch("POST", "/v1/completions", json={"prompt": "x", "max_tokens": 0})  # 400

    m = await families(server)
    length = 3 + 1 + (1 if text.choices[0].finish_reason == "length" else 0)
    stops = 1 + (1 if text.choices[0].finish_reason == "stop" else 0)
    success = m["vllm:request_success"]
    assert sample(success, "_total", finished_reason="length") == length
    assert sample(success, "_total", finished_reason="stop") == stops
    requests = 6
    assert sample(m["vllm:prompt_tokens"], "_total") == sum(u.prompt_tokens for u in usages)
    generated = sum(u.completion_tokens for u in usages)
    assert sample(m["vllm:generation_tokens"], "_total") == generated
    for name in (
        "vllm:e2e_request_latency_seconds",
        "vllm:time_to_first_token_seconds",
        "vllm:request_queue_time_seconds",
        "vllm:request_prompt_tokens",
    ):
        assert sample(m[name], "_count") == requests, name
    assert sample(m["vllm:request_generation_tokens"], "_count") == length + stops
    assert sample(m["vllm:request_generation_tokens"], "_sum") == generated
    # One gap between each two tokens of a request.
    assert sample(m["vllm:inter_token_latency_seconds"], "_count") == generated - requests
    # The engine's gauges come with its next report: it hears of the stop string there.
    async with asyncio.timeout(5):
        while sample((await families(server))["vllm:num_requests_running"], "") != 0:
            await asyncio.sleep(0.01)


def test_token_buckets_follow_1_2_5_up_to_the_context():
    assert token_buckets(512) == [1, 2, 5, 10, 20, 50, 100, 200, 500]
    assert token_buckets(1) == [1]


async def test_prompt_tokens_count_at_prefill_and_never_for_requests_that_never_ran(make_server):
    """As vLLM's: prefill tokens processed, so a running request's prompt counts already and
    a request aborted while it waited never counts."""
    server = make_server(
        engine_config={"max_num_seqs": 1},
        readiness={"canary_interval_s": 600},  # no canary: the one batch slot stays ours
    )
    client = server.async_client()
    running = await client.completions.create(
        model="stories260K", prompt=[1, 403, 407, 261, 378], max_tokens=400, stream=True,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    await running.__anext__()
    waiting = await client.completions.create(
        model="stories260K", prompt=[1, 403, 407], max_tokens=4, stream=True
    )
    while server.state.model.engine.stats.num_waiting < 1:
        await asyncio.sleep(0.005)
    assert sample((await families(server))["vllm:prompt_tokens"], "_total") == 5
    await waiting.close()
    await running.close()
    while True:  # both aborts reach the metrics
        m = await families(server)
        totals = [s for s in m["vllm:request_success"].samples if s.name.endswith("_total")]
        if [s.value for s in totals if s.labels["finished_reason"] == "abort"] == [2]:
            break
        await asyncio.sleep(0.01)
    assert sample(m["vllm:prompt_tokens"], "_total") == 5


async def test_metrics_explain_the_slowest_engine_loop_pass(server):
    await server.async_client().completions.create(model="stories260K", prompt="A", max_tokens=3)
    found = await families(server)
    wall = found["pagoda:engine_loop_longest_pass_seconds"].samples[0].value
    parts = found["pagoda:engine_loop_longest_pass_part_seconds"]
    by_part = {s.labels["part"]: s.value for s in parts.samples}
    # The longest pass is a step (schedule .. outputs) or, on a busy machine, a pass that only
    # handed commands over; either way its parts are named and add up to no more than its time.
    assert "gc" in by_part and set(by_part) - {"gc"}
    known = {"commands", "schedule", "launch", "resolve", "outputs", "hand-over", "gc"}
    assert set(by_part) <= known
    assert wall > 0 and sum(v for k, v in by_part.items() if k != "gc") <= wall
    cpu = found["pagoda:engine_loop_longest_pass_cpu_seconds"]
    assert {s.labels["cpu"] for s in cpu.samples} == {"engine_thread", "process"}
    most_cpu = found["pagoda:engine_loop_most_pass_cpu_seconds"].samples[0].value
    assert most_cpu > 0 and sample(cpu, "", cpu="engine_thread") <= most_cpu
