"""Reading a request's body within a deadline, so a client that stops sending holds nothing."""

from __future__ import annotations

import asyncio

from aiohttp import web

from worker.server.errors import APIError


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
