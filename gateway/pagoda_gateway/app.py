"""The gateway's HTTP face: tenant keys and limits in front, the forwarder behind."""

from __future__ import annotations

import asyncio
import json
import logging
import math

from aiohttp import web
from pagoda_worker.server.access_log import LOG_FIELDS, request_id_middleware
from pagoda_worker.server.deadlines import read_body
from pagoda_worker.server.errors import APIError, error_body

from .affinity import Affinity, affinity_of
from .limits import LimitExceeded, TenantLimits
from .metrics import GatewayMetrics
from .proxy import Forwarder, Outcome
from .tenants import ANONYMOUS, Limits, Tenant, TenantKeys

log = logging.getLogger("pagoda.gateway")
TENANT = web.RequestKey("tenant", Tenant)
CHARS_PER_TOKEN = 4  # the reservation's prompt estimate; usage settles the real count
DEFAULT_MAX_TOKENS = 1024  # reserved when a chat sets no max_tokens
LEGACY_COMPLETION_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
GENERATION_PATHS = ("/v1/completions", "/v1/chat/completions")


class GatewayState:
    def __init__(
        self,
        keys: TenantKeys,
        limits: TenantLimits,
        forwarder: Forwarder,
        metrics: GatewayMetrics,
        prefix_chars: int,
        body_timeout_s: float,
    ) -> None:
        self.keys = keys
        self.limits = limits
        self.forwarder = forwarder
        self.metrics = metrics
        self.prefix_chars = prefix_chars
        self.body_timeout_s = body_timeout_s
        self.ready = False  # discovery has synced, and not draining
        self.in_flight = 0


STATE = web.AppKey("state", GatewayState)


@web.middleware
async def error_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except APIError as e:
        return e.response()
    except web.HTTPException as e:  # aiohttp's own: 404, 405, 413
        if e.status < 400:
            raise
        return web.json_response(error_body(e.reason), status=e.status)


@web.middleware
async def tenant_middleware(request: web.Request, handler):
    """/v1 needs a tenant's key when tenants are configured; probes and metrics stay open."""
    if not request.path.startswith("/v1/"):
        return await handler(request)
    state = request.app[STATE]
    if not state.keys.enabled:
        request[TENANT] = Tenant(ANONYMOUS, Limits())
    elif (tenant := state.keys.tenant_for(request.headers.get("Authorization"))) is not None:
        request[TENANT] = tenant
    else:
        raise APIError(
            401,
            "a valid API key is required: send it as 'Authorization: Bearer <key>'",
            code="invalid_api_key",
        )
    request[LOG_FIELDS]["tenant"] = request[TENANT].name
    state.in_flight += 1
    try:
        return await handler(request)
    finally:
        state.in_flight -= 1


async def generation(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    tenant = request[TENANT]
    body = await _json_object(request)
    limiter = state.limits.for_tenant(tenant)
    prompt_estimate = _prompt_estimate(body)
    try:
        grant = limiter.admit(prompt_estimate + _max_tokens(body))
    except LimitExceeded as e:
        state.metrics.rate_limited.labels(tenant.name, e.limit).inc()
        headers = e.headers | {"Retry-After": str(max(1, math.ceil(e.retry_after_s)))}
        raise APIError(
            429, str(e), error_type="rate_limit_error", code="rate_limit_exceeded", headers=headers
        ) from None
    outcome = Outcome(started_at=asyncio.get_running_loop().time())
    in_flight = state.metrics.in_flight.labels(tenant.name)
    in_flight.inc()
    try:
        affinity = affinity_of(body, request.headers, state.prefix_chars)
        return await state.forwarder.forward(request, outcome, body, affinity, limiter.headers())
    finally:
        in_flight.dec()
        prompt, completion = _usage(outcome, prompt_estimate)
        grant.settle(prompt + completion)
        _account(request, state, tenant, outcome, prompt, completion)


async def models(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    outcome = Outcome(started_at=asyncio.get_running_loop().time())
    return await state.forwarder.forward(request, outcome, None, Affinity(None), {})


def _usage(outcome: Outcome, prompt_estimate: int) -> tuple[int, int]:
    """The worker's usage when it sent one; else the estimate and one token per chunk (a
    stream cut short), or nothing when no worker took the request."""
    if outcome.prompt_tokens is not None:
        return outcome.prompt_tokens, outcome.completion_tokens or 0
    if outcome.first_byte_s is None:
        return 0, 0
    return prompt_estimate, outcome.chunks


def _account(
    request: web.Request,
    state: GatewayState,
    tenant: Tenant,
    outcome: Outcome,
    prompt: int,
    completion: int,
) -> None:
    loop_time = asyncio.get_running_loop().time()
    state.metrics.tokens.labels(tenant.name, "prompt").inc(prompt)
    state.metrics.tokens.labels(tenant.name, "completion").inc(completion)
    state.metrics.duration.labels(tenant.name).observe(loop_time - outcome.started_at)
    if outcome.first_byte_s is not None:
        state.metrics.first_byte.labels(tenant.name).observe(outcome.first_byte_s)
    request[LOG_FIELDS].update(
        backend=outcome.backend,
        attempts=outcome.attempts,
        prompt_tokens=prompt,
        completion_tokens=completion,
        first_byte_ms=None
        if outcome.first_byte_s is None
        else round(outcome.first_byte_s * 1e3, 2),
    )


@web.middleware
async def count_middleware(request: web.Request, handler):
    """Every /v1 answer counts once under its tenant and status, errors included."""
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except APIError as e:
        status = e.status
        raise
    finally:
        if (tenant := request.get(TENANT)) is not None:
            request.app[STATE].metrics.requests.labels(tenant.name, str(status)).inc()


async def _json_object(request: web.Request) -> dict:
    raw = await read_body(request, request.app[STATE].body_timeout_s)
    try:
        body = json.loads(raw)
    except ValueError:
        raise APIError(400, "the request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    return body


def _prompt_estimate(body: dict) -> int:
    prompt = body.get("messages", body.get("prompt", ""))
    text = prompt if isinstance(prompt, str) else json.dumps(prompt)
    return max(1, len(text) // CHARS_PER_TOKEN)


def _max_tokens(body: dict) -> int:
    """What the request may generate at most: max_tokens (or OpenAI's default) times n."""
    choices = max(1, _int(body.get("n"), 1))
    for field in ("max_completion_tokens", "max_tokens"):
        value = body.get(field)
        if isinstance(value, int) and value > 0:
            return value * choices
    default = DEFAULT_MAX_TOKENS if "messages" in body else LEGACY_COMPLETION_MAX_TOKENS
    return default * choices


def _int(value, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    if request.app[STATE].ready:
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "not ready"}, status=503)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[STATE].metrics.render()
    return web.Response(body=body, content_type="text/plain", charset="utf-8")


def build_app(state: GatewayState, max_body_bytes: int) -> web.Application:
    app = web.Application(
        client_max_size=max_body_bytes,
        middlewares=[request_id_middleware, error_middleware, tenant_middleware, count_middleware],
    )
    app[STATE] = state
    for path in GENERATION_PATHS:
        app.router.add_post(path, generation)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    return app
