"""Probes before the model is ready, and once it is."""

from __future__ import annotations

import aiohttp
import pytest
from pagoda_worker.engine.messages import Faults
from pagoda_worker.server.server import Server, ServerSettings
from prometheus_client.parser import text_string_to_metric_families

from tests.server.observe import poll_ready

pytestmark = pytest.mark.timeout(60)


async def test_while_loading_everything_says_loading():
    server = Server(ServerSettings(port=0))
    url = await server.bind()  # bound, no model yet: as during a long load
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/health") as r:
                assert (r.status, await r.json()) == (503, {"status": "loading"})
            async with session.get(url + "/ready") as r:
                assert r.status == 503
                assert (await r.json())["reasons"] == ["the model is loading"]
            async with session.post(url + "/v1/completions", json={"prompt": "x"}) as r:
                assert r.status == 503
                assert (await r.json())["error"]["message"] == "the model is still loading"
            async with session.get(url + "/metrics") as r:  # a scrape still learns why
                assert r.status == 200
                samples = {
                    s.name: s.value
                    for family in text_string_to_metric_families(await r.text())
                    for s in family.samples
                }
                assert samples == {"pagoda:ready": 0.0, "pagoda:loading": 1.0}
    finally:
        await server.stop()


async def test_a_warm_server_is_alive_and_ready(server):
    health = await server.fetch("GET", "/health")
    assert (health.status, health.json()) == (200, {"status": "ok"})
    ready = await server.fetch("GET", "/ready")
    assert (ready.status, ready.json()) == (200, {"ready": True})


async def test_ready_needs_a_recent_generation(make_server):
    server = make_server(
        readiness={"canary_interval_s": 0.1, "canary_timeout_s": 0.2, "canary_max_age_s": 0.5}
    )
    await poll_ready(server, 200)
    # A step that takes 3 s: canaries time out, the loop itself is not (yet) stale.
    server.engine.set_faults(Faults(hang_s=3.0))
    reply = await poll_ready(server, 503)
    assert reply.json()["reasons"] == ["no token generated recently (canary or traffic)"]
    await poll_ready(server, 200)


async def test_traffic_counts_as_proof_of_life(make_server):
    """Under load a canary may queue behind real work; real tokens must keep the pod ready."""
    server = make_server(readiness={"canary_interval_s": 1000.0, "canary_max_age_s": 0.5})
    await poll_ready(server, 200)
    await poll_ready(server, 503)  # idle, and no canary for a long time: no proof
    client = server.async_client()
    stream = await client.completions.create(
        model="stories260K", prompt="Once upon a time", max_tokens=400, stream=True,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    async for _ in stream:
        break
    await poll_ready(server, 200)
    await stream.close()
