"""The aiohttp application: routes, and the middlewares every request passes through."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from pagoda_worker.server import faults, openai_routes, probes
from pagoda_worker.server.access_log import LOG_FIELDS, request_id_middleware
from pagoda_worker.server.errors import APIError
from pagoda_worker.server.state import STATE, WorkerState

log = logging.getLogger("pagoda.server")

GENERATION_PATHS = {"/v1/completions", "/v1/chat/completions"}


@web.middleware
async def error_middleware(request: web.Request, handler):
    """Every error leaves as an OpenAI error body; nothing escapes as a bare 500 page."""
    try:
        return await handler(request)
    except APIError as e:
        request[LOG_FIELDS].update(error_param=e.param, error_code=e.code)
        return e.response()
    except web.HTTPException as e:
        if e.status < 400:
            raise
        message = f"{e.reason}: {request.method} {request.path}"
        if e.status == 413 and e.text:  # aiohttp's text names the size limit
            message = e.text
        headers = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
        return APIError(e.status, message, headers=headers).response()
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return APIError(500, "internal server error", error_type="internal_error").response()


@web.middleware
async def auth_middleware(request: web.Request, handler):
    """API keys guard /v1; probes and metrics stay open for the kubelet and Prometheus."""
    state = request.app[STATE]
    guarded = state.keys.enabled and request.path.startswith("/v1/")
    if guarded and not state.keys.allows(request.headers.get("Authorization")):
        if state.model:
            state.model.metrics.reject("unauthorized")
        raise APIError(
            401,
            "missing or invalid API key (send Authorization: Bearer <key>)",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return await handler(request)


@web.middleware
async def drain_middleware(request: web.Request, handler):
    """Once draining, refuse new generations before reading their bodies (respond() checks
    again before submitting one)."""
    if request.path in GENERATION_PATHS:
        request.app[STATE].refuse_if_draining()
    return await handler(request)


@web.middleware
async def body_size_middleware(request: web.Request, handler):
    """A declared Content-Length over the limit gets its 413 before a byte of the body is read."""
    limit = request.app[STATE].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise APIError(
            413,
            f"the request body of {request.content_length} bytes exceeds the limit of "
            f"{limit} bytes",
            code="body_too_large",
        )
    return await handler(request)


def build_app(state: WorkerState, test_faults: bool = False) -> web.Application:
    app = web.Application(
        middlewares=[
            request_id_middleware,
            error_middleware,
            body_size_middleware,
            auth_middleware,
            drain_middleware,
        ],
        client_max_size=state.max_body_bytes,
    )
    app[STATE] = state
    app.router.add_post("/v1/completions", openai_routes.completions)
    app.router.add_post("/v1/chat/completions", openai_routes.chat_completions)
    app.router.add_get("/v1/models", openai_routes.models)
    app.router.add_get("/health", probes.health)
    app.router.add_get("/ready", probes.ready)
    app.router.add_get("/metrics", probes.metrics)
    app.router.add_get("/version", probes.version_info)
    if test_faults:
        faults.add_routes(app)
    return app
