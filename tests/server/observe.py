"""What the server tests read off a running server: its metrics, its idleness, its readiness,
and the long request several of them keep in flight."""

from __future__ import annotations

import asyncio
import time

from prometheus_client.parser import text_string_to_metric_families

LONG = {"prompt": "Once upon a time", "max_tokens": 480, "extra_body": {"ignore_eos": True}}


async def scrape(server) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels without model_name): value}"""
    reply = await server.fetch("GET", "/metrics")
    samples = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "model_name"))
            samples[(s.name, labels)] = s.value
    return samples


async def wait_until_idle(server, timeout_s: float = 10.0) -> dict:
    """Running gauge and KV usage back to zero (canaries are short; they come and go)."""
    deadline = time.monotonic() + timeout_s
    while True:
        m = await scrape(server)
        if m[("vllm:num_requests_running", ())] == 0 and m[("vllm:kv_cache_usage_perc", ())] == 0:
            return m
        assert time.monotonic() < deadline, "the server did not return to idle"
        await asyncio.sleep(0.02)


async def poll_ready(server, status: int, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while (reply := await server.fetch("GET", "/ready")).status != status:
        assert time.monotonic() < deadline, f"/ready never answered {status}"
        await asyncio.sleep(0.05)
    return reply
