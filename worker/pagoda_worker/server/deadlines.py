"""Reading a request's body and writing a stream within deadlines, so a client that stops sending
or stops reading holds nothing (no slot, no drain)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from pagoda_worker.server.errors import APIError


async def read_body(request: web.Request, timeout_s: float) -> bytes:
    """The whole body, or 408 (and the connection closed) after `timeout_s`; aiohttp answers
    413 beyond the app's client_max_size."""
    try:
        async with asyncio.timeout(timeout_s):
            return await request.read()
    except TimeoutError:
        raise APIError(
            408,
            f"the request body did not arrive within {timeout_s:g} s",
            code="body_timeout",
            headers={"Connection": "close"},
        ) from None


async def write_within(
    request: web.Request, response: web.StreamResponse, data: bytes, timeout_s: float
) -> None:
    """Writes `data`, or drops the connection (and what the client never read) after
    `timeout_s` and raises ConnectionResetError, as a client that left would."""
    try:
        async with asyncio.timeout(timeout_s):
            await response.write(data)
    except TimeoutError:
        if request.transport:
            request.transport.abort()
        raise ConnectionResetError("the client stopped reading") from None
