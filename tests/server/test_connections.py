"""Slow and stalled clients: header and body timeouts, an early 413, and drains that neither
wait for stalled uploads nor cut streams without a word."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from pagoda_worker.engine.messages import Faults

pytestmark = pytest.mark.timeout(60)


async def raw_connection(server, request: bytes):
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    return reader, writer


async def read_response(reader) -> tuple[bytes, bytes]:
    """(status line, body) of one response with a Content-Length."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    lines = head.decode().split("\r\n")
    length = next(int(h.split(":")[1]) for h in lines if h.lower().startswith("content-length"))
    return lines[0].encode(), await reader.readexactly(length)


def post_head(content_length: int) -> bytes:
    return (
        f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {content_length}\r\n\r\n"
    ).encode()


async def test_slow_headers_are_cut_off(make_server):
    server = make_server(header_timeout_s=0.3)
    reader, writer = await raw_connection(server, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(), timeout=5) == b""  # closed by the server
    assert time.monotonic() - started < 3
    writer.close()


async def test_a_stalled_body_gets_408(make_server):
    server = make_server(body_timeout_s=0.3)
    reader, writer = await raw_connection(server, post_head(100) + b'{"prompt": ')
    status, body = await read_response(reader)
    assert status.startswith(b"HTTP/1.1 408")
    assert json.loads(body)["error"]["code"] == "body_timeout"
    writer.close()


async def test_a_declared_oversized_body_gets_413_before_it_is_sent(server):
    limit = server.state.max_body_bytes
    reader, writer = await raw_connection(server, post_head(limit + 1))  # no body sent at all
    status, body = await read_response(reader)
    assert status.startswith(b"HTTP/1.1 413")
    assert json.loads(body)["error"]["code"] == "body_too_large"
    writer.close()


def stop_in_background(server) -> threading.Thread:
    stopping = threading.Thread(target=server.stop)
    stopping.start()
    return stopping


async def test_a_stalled_upload_does_not_hold_the_drain(make_server):
    server = make_server(drain_timeout_s=20.0, body_timeout_s=30.0)
    _, writer = await raw_connection(server, post_head(100) + b'{"prompt": ')
    await asyncio.sleep(0.1)
    started = time.monotonic()
    stopping = stop_in_background(server)
    await asyncio.to_thread(stopping.join, 15)
    assert time.monotonic() - started < 5  # not the 20 s drain timeout
    writer.close()


async def test_at_the_drain_deadline_streams_get_an_error_event_and_done(make_server):
    server = make_server(drain_timeout_s=0.5)
    server.engine.set_faults(Faults(step_delay_s=0.005))  # 480 steps outlast the deadline
    body = {"prompt": "Once", "max_tokens": 480, "ignore_eos": True, "stream": True}
    request = asyncio.create_task(server.fetch("POST", "/v1/completions", json=body))
    while server.state.in_flight == 0:
        await asyncio.sleep(0.01)
    stopping = stop_in_background(server)
    reply = await request
    await asyncio.to_thread(stopping.join, 15)
    events = [line[6:] for line in reply.body.decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "server_shutdown"
    finishes = {c["finish_reason"] for e in events[:-2] for c in json.loads(e)["choices"]}
    assert finishes == {None}


async def test_a_client_that_never_reads_does_not_hold_the_drain(make_server):
    server = make_server(drain_timeout_s=20.0, write_timeout_s=0.5)
    # Enough to fill the socket buffers long before it ends: 64 choices with 20 logprobs each.
    body = json.dumps({"prompt": ["Once"] * 8, "n": 8, "max_tokens": 480, "ignore_eos": True,
                       "stream": True, "logprobs": 20}).encode()  # fmt: skip
    _, writer = await raw_connection(server, post_head(len(body)) + body)  # never read
    while server.state.in_flight == 0:
        await asyncio.sleep(0.01)
    started = time.monotonic()
    stopping = stop_in_background(server)
    await asyncio.to_thread(stopping.join, 15)
    assert time.monotonic() - started < 10
    writer.close()
