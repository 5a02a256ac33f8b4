"""The test-only wedge fault: with PAGODA_TEST_FAULTS=1 a real server takes POST /debug/faults,
and a wedged engine fails /ready through the canary while /health stays ok; without the
variable the route does not exist."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from tests.server.observe import poll_ready

pytestmark = pytest.mark.timeout(60)

CANARY = {"canary_interval_s": 0.1, "canary_timeout_s": 0.2, "canary_max_age_s": 0.5}


@pytest.fixture
def faulty_server(make_server, monkeypatch):
    monkeypatch.setenv("PAGODA_TEST_FAULTS", "1")
    return make_server(readiness=CANARY)


async def test_without_the_variable_there_is_no_such_route(make_server, monkeypatch):
    monkeypatch.delenv("PAGODA_TEST_FAULTS", raising=False)
    server = make_server()
    reply = await server.fetch("POST", "/debug/faults", json={"wedge": True})
    assert reply.status == 404
    assert server.state.model.engine.faults.wedged is False


def test_the_server_warns_that_faults_are_on(make_server, monkeypatch, caplog):
    monkeypatch.setenv("PAGODA_TEST_FAULTS", "1")
    with caplog.at_level(logging.WARNING, logger="pagoda.server"):
        make_server()
    assert any("test faults are on" in r.getMessage() for r in caplog.records)


async def test_a_wedged_engine_fails_ready_through_the_canary_and_recovers(faulty_server):
    server = faulty_server
    await poll_ready(server, 200)
    wedged = await server.fetch("POST", "/debug/faults", json={"wedge": True})
    assert (wedged.status, wedged.json()) == (200, {"wedge": True, "step_delay_s": 0.0})
    started = time.monotonic()
    while (ready := await server.fetch("GET", "/ready")).status == 200:
        assert (await server.fetch("GET", "/health")).status == 200
        await asyncio.sleep(0.02)
    assert time.monotonic() - started <= CANARY["canary_max_age_s"] + 0.5
    assert ready.json()["reasons"] == ["no token generated recently (canary or traffic)"]
    health = await server.fetch("GET", "/health")
    assert (health.status, health.json()) == (200, {"status": "ok"}), "the loop still goes round"
    completion = asyncio.create_task(
        server.async_client().completions.create(model="stories260K", prompt="Once", max_tokens=4)
    )
    await asyncio.sleep(0.5)
    assert not completion.done(), "a request waits while the engine is wedged"

    cleared = await server.fetch("POST", "/debug/faults", json={"wedge": False})
    assert (cleared.status, cleared.json()) == (200, {"wedge": False, "step_delay_s": 0.0})
    await poll_ready(server, 200)
    assert (await completion).usage.completion_tokens == 4, "the waiting request is served"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"wedge": "yes"}, "wedge: Input should be a valid boolean"),
        ({"step_delay_s": -1}, "step_delay_s: Input should be greater than or equal to 0"),
        ({"wedge": True, "slow": 1}, "unrecognized request argument: slow"),
    ],
)
async def test_bad_fault_requests_are_refused(faulty_server, body, says):
    reply = await faulty_server.fetch("POST", "/debug/faults", json=body)
    assert reply.status == 400
    assert says in reply.json()["error"]["message"]
    assert faulty_server.state.model.engine.faults.wedged is False


async def test_a_step_delay_slows_every_step_until_cleared(faulty_server):
    server = faulty_server
    await poll_ready(server, 200)
    client = server.async_client()
    slow = await server.fetch("POST", "/debug/faults", json={"step_delay_s": 0.05})
    assert slow.json() == {"wedge": False, "step_delay_s": 0.05}
    started = time.monotonic()
    done = await client.completions.create(model="stories260K", prompt="Once", max_tokens=12)
    assert done.usage.completion_tokens == 12
    assert time.monotonic() - started >= 12 * 0.05, "each of the 12 steps waited"

    await server.fetch("POST", "/debug/faults", json={"step_delay_s": 0})
    started = time.monotonic()
    await client.completions.create(model="stories260K", prompt="Once", max_tokens=12)
    assert time.monotonic() - started < 12 * 0.05, "cleared: no more waiting"
