"""TEST ONLY: faults that end-to-end tests switch on in a real worker, to see what Kubernetes
and the operator do with it. Nothing here runs unless PAGODA_TEST_FAULTS=1 is set.

POST /debug/faults {"wedge": true} wedges the engine: its loop keeps going round (the heartbeat
stays fresh, /health stays 200) but takes no request and runs no step, so queued requests wait,
streams stall, and /ready fails once the canary finds no recent token. {"wedge": false} clears
it. {"step_delay_s": 0.1} makes every engine step wait that long first, as a much bigger model
would take: a stream of a few hundred tokens stays in flight for tens of seconds (0 clears it).
A field left out keeps its value; the answer holds both. Without the variable the route does
not exist (404).
"""

from __future__ import annotations

import logging
import os

import msgspec
import pydantic
from aiohttp import web

from pagoda_worker.server.errors import from_validation_error
from pagoda_worker.server.state import STATE

FAULTS_VARIABLE = "PAGODA_TEST_FAULTS"
PATH = "/debug/faults"

log = logging.getLogger("pagoda.server")


def enabled() -> bool:
    return os.environ.get(FAULTS_VARIABLE) == "1"


class Faults(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True)

    wedge: bool | None = None
    step_delay_s: float | None = pydantic.Field(None, ge=0, le=10)


def add_routes(app: web.Application) -> None:
    log.warning(
        "%s=1: test faults are on, POST %s can wedge the engine; never set it in production",
        FAULTS_VARIABLE,
        PATH,
    )
    app.router.add_post(PATH, set_faults)


async def set_faults(request: web.Request) -> web.Response:
    engine = request.app[STATE].loaded().engine
    try:
        asked = Faults.model_validate_json(await request.read())
    except pydantic.ValidationError as e:
        raise from_validation_error(e) from e
    now = engine.faults
    engine.set_faults(
        msgspec.structs.replace(
            now,
            wedged=now.wedged if asked.wedge is None else asked.wedge,
            step_delay_s=now.step_delay_s if asked.step_delay_s is None else asked.step_delay_s,
        )
    )
    now = engine.faults
    log.warning("test faults: wedged=%s, step delay %.3f s", now.wedged, now.step_delay_s)
    return web.json_response({"wedge": now.wedged, "step_delay_s": now.step_delay_s})
