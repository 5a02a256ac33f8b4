"""Soak: mixed traffic, abusive requests included, against one real `pagoda serve` on CPU.

Runs PAGODA_SOAK_SECONDS (default 20; `make soak` runs 600). Afterwards: no KV block leaked,
memory back near its warm baseline, /health never failed; the worst engine-loop pass and
/health latency are printed for the record.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.processes import start_serve, wait_ready

SOAK_SECONDS = float(os.environ.get("PAGODA_SOAK_SECONDS", "20"))
pytestmark = pytest.mark.timeout(SOAK_SECONDS + 180)

ONCE = "Once upon a time"
HUGE = {"prompt": [ONCE] * 32, "n": 64, "max_tokens": 16, "stream": True}  # 2048 sequences


def rss_bytes(pid: int) -> int:
    """The server's resident memory: its own and its children's (the engine process)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            if stat.parent.name == str(pid) or fields[1] == str(pid):  # itself, or a child
                total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")  # rss, in pages
        except (FileNotFoundError, ProcessLookupError):
            pass  # a process that ended while we looked
    return total


async def metrics(session, url) -> dict[str, float]:
    """name -> value; a labelled series as `name/label value` (model_name left out)."""
    async with session.get(url + "/metrics") as r:
        text = await r.text()
    values = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = [v for k, v in s.labels.items() if k != "model_name"]
            values["/".join([s.name, *labels])] = s.value
    return values


def slowest_pass(m: dict[str, float]) -> str:
    """The engine loop's slowest pass and where it went, from /metrics."""
    parts = "pagoda:engine_loop_longest_pass_part_seconds/"
    cpu = "pagoda:engine_loop_longest_pass_cpu_seconds/"
    laps = ", ".join(
        f"{name.removeprefix(parts)} {value * 1000:.1f}"
        for name, value in m.items()
        if name.startswith(parts)
    )
    return (
        f"{m['pagoda:engine_loop_longest_pass_seconds'] * 1000:.1f} ms ({laps}; CPU: engine "
        f"thread {m[cpu + 'engine_thread'] * 1000:.1f}, process {m[cpu + 'process'] * 1000:.1f}); "
        f"most engine-thread CPU in one pass "
        f"{m['pagoda:engine_loop_most_pass_cpu_seconds'] * 1000:.1f} ms"
    )


async def post(session, url, body, read_chunks: int | None = None) -> int:
    """read_chunks: leave a stream after that many chunks (a client that goes away)."""
    async with session.post(url + "/v1/completions", json=body) as r:
        if read_chunks is None:
            await r.read()
        else:
            for _ in range(read_chunks):
                await r.content.readline()
        return r.status


async def stalled_upload(url) -> None:
    host, port = url.removeprefix("http://").split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 99\r\n\r\n{")
    await asyncio.sleep(1.0)
    writer.close()


async def one_client(session, url, stop: float, statuses: dict) -> None:
    rng = random.Random(os.getpid() + id(statuses))
    kinds = [
        ("normal", lambda: post(session, url, {"prompt": ONCE, "max_tokens": 24})),
        ("stream", lambda: post(session, url, {"prompt": ONCE, "max_tokens": 24, "stream": True})),
        ("leaves", lambda: post(session, url, {"prompt": ONCE, "max_tokens": 200,
                                               "stream": True}, read_chunks=3)),
        ("huge", lambda: post(session, url, HUGE, read_chunks=2)),
        ("over_cap", lambda: post(session, url, {"prompt": [ONCE] * 64, "n": 64})),
        ("tiny_temp", lambda: post(session, url, {"prompt": ONCE, "temperature": 1e-39})),
        ("infinity", lambda: post_raw(session, url, b'{"prompt": "x", "temperature": Infinity}')),
        ("stalled", lambda: stalled_upload(url)),
    ]  # fmt: skip
    while time.monotonic() < stop:
        name, send = rng.choice(kinds)
        status = await send()
        statuses.setdefault(name, {}).setdefault(status, 0)
        statuses[name][status] += 1


async def post_raw(session, url, body: bytes) -> int:
    async with session.post(url + "/v1/completions", data=body) as r:
        await r.read()
        return r.status


async def watch_health(session, url, stop: float) -> tuple[int, float]:
    failures, slowest = 0, 0.0
    while time.monotonic() < stop:
        started = time.monotonic()
        async with session.get(url + "/health") as r:
            failures += r.status != 200
        slowest = max(slowest, time.monotonic() - started)
        await asyncio.sleep(0.05)
    return failures, slowest


async def soak(url: str, pid: int) -> None:
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for _ in range(5):  # warm: the baseline includes what normal serving allocates
            await post(session, url, {"prompt": ONCE, "max_tokens": 24})
        baseline = rss_bytes(pid)
        stop = time.monotonic() + SOAK_SECONDS
        statuses: dict = {}
        health = asyncio.create_task(watch_health(session, url, stop))
        await asyncio.gather(*(one_client(session, url, stop, statuses) for _ in range(6)))
        failures, slowest_health = await health
        deadline = time.monotonic() + 60
        while (m := await metrics(session, url))["vllm:num_requests_running"] or m[
            "vllm:num_requests_waiting"
        ]:
            assert time.monotonic() < deadline, "the server did not return to idle"
            await asyncio.sleep(0.1)
        after = rss_bytes(pid)
    print(
        f"\nsoak {SOAK_SECONDS:.0f} s: {json.dumps(statuses, sort_keys=True)}\n"
        f"leaked blocks {m['pagoda:kv_cache_blocks'] - m['pagoda:kv_cache_free_blocks']:.0f}; "
        f"RSS {baseline / 2**20:.0f} -> {after / 2**20:.0f} MiB; /health failures {failures}, "
        f"slowest {slowest_health * 1000:.0f} ms; longest engine-loop pass {slowest_pass(m)}"
    )
    assert failures == 0
    assert m["pagoda:kv_cache_free_blocks"] == m["pagoda:kv_cache_blocks"]
    assert after < baseline * 1.25 + 100 * 2**20  # allocator slack, no growth per request
    assert statuses["over_cap"] == {400: statuses["over_cap"][400]}
    assert set(statuses["infinity"]) == {400}


def test_soak_mixed_and_abusive_traffic(stories_dir):
    started = start_serve("--model", str(stories_dir), "--body-timeout", "0.5")
    proc, url = started.proc, started.url
    try:
        wait_ready(url)
        asyncio.run(soak(url, proc.pid))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
