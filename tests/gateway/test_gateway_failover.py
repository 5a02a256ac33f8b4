"""Workers that die: before the first token the request moves to another worker, after it the
stream ends with an error event, and with every primary gone the standby serves at once.
Each test kills workers, so each starts its own."""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests.gateway.plain_http import BACKEND, COMPLETIONS, Stream, collect, post, scrape
from tests.gateway.workers import backend_name, set_faults, start_workers

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def fresh_workers(worker_key_file):
    started = []

    def make(count: int):
        started.extend(start_workers(count, worker_key_file))
        return started[-count:]

    yield make
    for worker in started:
        worker.stop()


def worker_for_session(gateway, workers, session: str):
    body = {"prompt": "Once", "max_tokens": 1, "user": session}
    name = post(gateway.url, COMPLETIONS, body).headers[BACKEND]
    return next(w for w in workers if backend_name(w) == name)


def test_a_worker_killed_before_the_first_token_is_retried_elsewhere(fresh_workers, make_gateway):
    workers = fresh_workers(2)
    gateway = make_gateway([w.url for w in workers])
    doomed = worker_for_session(gateway, workers, "s-1")
    survivor = next(w for w in workers if w is not doomed)
    set_faults(doomed, wedge=True)  # it takes the request but never starts it
    result = {}
    body = {"prompt": "Once", "max_tokens": 16, "user": "s-1", "stream": True}

    def ask():
        stream = Stream(gateway.url, COMPLETIONS, body)
        result["backend"] = stream.headers.get(BACKEND)
        result["events"] = collect(stream)

    asking = threading.Thread(target=ask)
    asking.start()
    time.sleep(1.0)
    assert "events" not in result, "the wedged worker answered"
    doomed.proc.kill()
    asking.join(60)
    assert result["backend"] == backend_name(survivor)
    assert result["events"][-1] == b"[DONE]"
    assert not any(b'"error"' in e for e in result["events"])
    text = "".join(json.loads(e)["choices"][0]["text"] for e in result["events"][:-1])
    assert text
    assert scrape(gateway.url, "pagoda_gateway_retries_total") == 1


def test_a_worker_killed_mid_stream_ends_the_stream_with_an_error_event(
    fresh_workers, make_gateway
):
    workers = fresh_workers(2)
    gateway = make_gateway([w.url for w in workers])
    doomed = worker_for_session(gateway, workers, "s-2")
    set_faults(doomed, step_delay_s=0.1)
    body = {"prompt": "Once", "max_tokens": 200, "ignore_eos": True, "user": "s-2"}
    stream = Stream(gateway.url, COMPLETIONS, body)
    events = stream.events()
    firsts = [next(events) for _ in range(3)]
    assert all(b'"text"' in e for e in firsts)
    doomed.proc.kill()
    rest = list(events)
    stream.close()
    assert rest[-1] == b"[DONE]"
    error = json.loads(rest[-2])["error"]
    assert error["type"] == "service_unavailable" and backend_name(doomed) in error["message"]
    assert len(rest) < 200, "the stream went on after its worker died"


def test_with_every_primary_down_the_standby_serves_at_once(fresh_workers, make_gateway):
    primary, standby = fresh_workers(2)
    gateway = make_gateway([primary.url], standby=[standby.url])
    body = {"prompt": "Once", "max_tokens": 4}
    assert post(gateway.url, COMPLETIONS, body).headers[BACKEND] == backend_name(primary)
    primary.proc.kill()
    primary.proc.wait()
    for _ in range(3):
        asked = time.monotonic()
        reply = post(gateway.url, COMPLETIONS, body)
        assert reply.status == 200 and reply.headers[BACKEND] == backend_name(standby)
        assert time.monotonic() - asked < 5, "failover waited"
    deadline = time.monotonic() + 5
    while scrape(gateway.url, "pagoda_gateway_ready_backends", role="active") != 0:
        assert time.monotonic() < deadline, "the dead primary still counts as ready"
        time.sleep(0.1)
