"""Probes and facts: /health (alive), /ready (can serve), /metrics, /version."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from aiohttp import web

from pagoda_worker.server.metrics import CONTENT_TYPE, loading_metrics
from pagoda_worker.server.state import STATE


async def health(request: web.Request) -> web.Response:
    """Alive: the engine loop goes round."""
    state = request.app[STATE]
    if state.model is None:
        return web.json_response({"status": "loading"}, status=503)
    if not state.is_alive():
        engine = state.model.engine
        body = {
            "status": "unhealthy",
            "heartbeat_age_s": round(engine.heartbeat_age(), 3),
            "error": repr(engine.error) if engine.error else None,
        }
        return web.json_response(body, status=503)
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    """Ready: loaded, warm, a recent canary generation passed, not draining."""
    reasons = request.app[STATE].not_ready_reasons()
    if reasons:
        return web.json_response({"ready": False, "reasons": reasons}, status=503)
    return web.json_response({"ready": True})


async def metrics(request: web.Request) -> web.Response:
    model = request.app[STATE].model
    body = model.metrics.render() if model else loading_metrics()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def pagoda_version() -> str:
    try:
        return version("pagoda")
    except PackageNotFoundError:
        return "unknown"


async def version_info(request: web.Request) -> web.Response:
    return web.json_response({"version": pagoda_version()})
