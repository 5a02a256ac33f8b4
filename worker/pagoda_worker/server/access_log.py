"""Structured access logs: one JSON line per HTTP request, keyed by its request id.

Headers are never logged (they may carry API keys); routes add what they know about the
generation (model, token counts, finish reasons) to `request[LOG_FIELDS]`.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from datetime import UTC, datetime

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID = web.RequestKey("request_id", str)
LOG_FIELDS = web.RequestKey("log_fields", dict)
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_for(offered: str | None) -> str:
    """The client's X-Request-Id when it is sane, else a fresh one."""
    if offered and _CLIENT_ID.fullmatch(offered):
        return offered
    return uuid.uuid4().hex


@web.middleware
async def request_id_middleware(request: web.Request, handler):
    request[REQUEST_ID] = request_id_for(request.headers.get(REQUEST_ID_HEADER))
    request[LOG_FIELDS] = {}
    response = await handler(request)
    if not response.prepared:  # a stream sets it itself before its headers go out
        response.headers[REQUEST_ID_HEADER] = request[REQUEST_ID]
    return response


class JsonAccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        entry = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "request_id": request.get(REQUEST_ID),
            "remote": request.remote,
            "method": request.method,
            "path": request.path,
            "status": response.status,
            "duration_ms": round(time * 1000, 2),
            "bytes": response.body_length,
            **request.get(LOG_FIELDS, {}),
        }
        self.logger.info(json.dumps(entry))

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
