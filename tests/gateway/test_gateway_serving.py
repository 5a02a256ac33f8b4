"""The gateway in front of two real workers: what passes through, who serves, tenants' limits,
metrics and logs, disconnects, and the hold queue."""

from __future__ import annotations

import json
import re
import socket
import threading
import time

import openai
import pytest

from tests.gateway.plain_http import BACKEND, CHAT, COMPLETIONS, Stream, collect, post, scrape
from tests.gateway.workers import TENANT_KEYS, backend_name, set_faults
from tests.processes import get, start_pagoda

pytestmark = pytest.mark.timeout(180)


def client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)


@pytest.fixture
def gateway(workers, make_gateway):
    return make_gateway([w.url for w in workers])


def test_completions_and_chats_pass_through_unchanged(workers, gateway, worker_key_file):
    direct = client(workers[0].url, key="worker-secret")
    through = client(gateway.url)
    ask = dict(model="stories260K", prompt="Once upon a time", max_tokens=24, temperature=0)
    assert through.completions.create(**ask).choices[0].text == (
        direct.completions.create(**ask).choices[0].text
    )
    chat = dict(
        model="stories260K",
        messages=[{"role": "user", "content": "Tell me a story"}],
        max_tokens=24,
        temperature=0,
    )
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in through.chat.completions.create(**chat, stream=True)
    )
    assert streamed == direct.chat.completions.create(**chat).choices[0].message.content

    raw = collect(Stream(gateway.url, CHAT, chat))
    assert raw[-1] == b"[DONE]"
    assert all(b'"usage"' not in e for e in raw), "usage the client did not ask for leaked"
    asked = collect(Stream(gateway.url, CHAT, chat | {"stream_options": {"include_usage": True}}))
    usage = json.loads(asked[-2])["usage"]
    assert usage["completion_tokens"] == 24 and usage["prompt_tokens"] > 0


def test_the_answering_worker_is_named_and_models_are_listed(workers, gateway):
    reply = post(gateway.url, COMPLETIONS, {"prompt": "Once", "max_tokens": 2})
    assert reply.status == 200 and reply.headers[BACKEND] in {backend_name(w) for w in workers}
    assert get(gateway.url + "/v1/models")[1]["data"][0]["id"] == "stories260K"


def test_a_session_stays_on_one_worker_and_sessions_spread(workers, gateway):
    def served_by(**how) -> str:
        headers = {"x-session-id": how.pop("session")} if "session" in how else None
        body = {"prompt": "Once", "max_tokens": 1} | how
        return post(gateway.url, COMPLETIONS, body, headers=headers).headers[BACKEND]

    assert len({served_by(user="alice") for _ in range(8)}) == 1
    assert len({served_by(session="s-17") for _ in range(8)}) == 1
    # the header names the session, whatever the body's user says
    assert {served_by(session="s-17", user=f"u{i}") for i in range(4)} == {
        served_by(session="s-17")
    }
    assert {served_by(user=f"user-{i}") for i in range(24)} == {backend_name(w) for w in workers}


def test_conversations_follow_their_history_and_their_system_prompt(workers, gateway):
    def turns(system: str, topic: str) -> tuple[str, str]:
        """Two turns of one conversation: the workers that served them."""
        first = [{"role": "system", "content": system}, {"role": "user", "content": topic}]
        one = post(gateway.url, CHAT, {"messages": first, "max_tokens": 8})
        reply = one.json()["choices"][0]["message"]
        later = [*first, reply, {"role": "user", "content": "And then?"}]
        two = post(gateway.url, CHAT, {"messages": later, "max_tokens": 8})
        return one.headers[BACKEND], two.headers[BACKEND]

    shared = "You tell short stories about animals, in simple words. " * 6
    homes = set()
    for topic in ("a cat", "a dog", "a fox", "a bird", "a fish", "a frog"):
        one, two = turns(shared, f"Tell me about {topic}.")
        assert one == two, f"the second turn about {topic} left its history"
        homes.add(one)
    assert len(homes) == 1, "conversations sharing a system prompt left the worker holding it"
    # system prompts nobody holds yet are placed by their beginning: they spread
    places = {turns(f"Story teller number {i}. " * 12, "Tell me a story.")[0] for i in range(12)}
    assert places == {backend_name(w) for w in workers}


@pytest.fixture
def tenant_gateway(workers, make_gateway, tenants_file):
    return make_gateway([w.url for w in workers], "--tenants", str(tenants_file))


def test_keys_are_required_and_never_reach_the_workers(tenant_gateway):
    for key in (None, "wrong", "worker-secret"):
        reply = post(tenant_gateway.url, COMPLETIONS, {"prompt": "Once"}, key=key)
        assert reply.status == 401 and reply.json()["error"]["code"] == "invalid_api_key"
    ok = post(tenant_gateway.url, COMPLETIONS, {"prompt": "Once", "max_tokens": 1}, key="beta-key")
    assert ok.status == 200  # the gateway sent the workers their own key, not the tenant's
    assert get(tenant_gateway.url + "/health")[0] == 200  # probes need no key


def test_requests_per_minute_are_counted_exactly_per_tenant(tenant_gateway):
    alpha, beta = TENANT_KEYS["alpha"], TENANT_KEYS["beta"]
    body = {"prompt": "Once", "max_tokens": 1}
    replies = [post(tenant_gateway.url, COMPLETIONS, body, key=alpha) for _ in range(3)]
    assert [r.status for r in replies] == [200, 200, 200]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in replies] == ["2", "1", "0"]
    refused = post(tenant_gateway.url, COMPLETIONS, body, key=alpha)
    assert refused.status == 429
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert 55 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-limit-requests"] == "3"
    assert post(tenant_gateway.url, COMPLETIONS, body, key=beta).status == 200  # not alpha's
    url = tenant_gateway.url
    assert scrape(url, "pagoda_gateway_requests_total", tenant="alpha", code="200") == 3
    assert scrape(url, "pagoda_gateway_requests_total", tenant="alpha", code="429") == 1
    assert scrape(url, "pagoda_gateway_rate_limited_total", tenant="alpha", limit="requests") == 1


def test_tokens_per_minute_are_reserved_then_settled_from_real_usage(tenant_gateway):
    gamma = TENANT_KEYS["gamma"]  # 300 tokens a minute; "Once" is estimated at 1 token
    first = post(tenant_gateway.url, COMPLETIONS, {"prompt": "Once", "max_tokens": 250,
                 "stop": ["."]}, key=gamma)  # fmt: skip
    assert first.status == 200
    assert int(first.headers["x-ratelimit-remaining-tokens"]) == 300 - 251  # reserved
    used = first.json()["usage"]["total_tokens"]
    assert used < 240  # stopped early: only what it used stays counted
    # 251 + 61 would not fit had the reservation stayed; settled at `used`, it fits
    second = post(tenant_gateway.url, COMPLETIONS, {"prompt": "Once", "max_tokens": 60}, key=gamma)
    assert second.status == 200
    spent = used + second.json()["usage"]["total_tokens"]
    assert scrape(tenant_gateway.url, "pagoda_gateway_tokens_total", tenant="gamma",
                  kind="completion") + scrape(tenant_gateway.url, "pagoda_gateway_tokens_total",
                  tenant="gamma", kind="prompt") == spent  # fmt: skip
    over = {"prompt": "Once", "max_tokens": 300 - spent}  # reserves one token more than is left
    third = post(tenant_gateway.url, COMPLETIONS, over, key=gamma)
    assert third.status == 429 and "tokens per minute" in third.json()["error"]["message"]
    assert int(third.headers["retry-after"]) >= 1
    assert third.headers["x-ratelimit-remaining-tokens"] == str(300 - spent)


def test_concurrent_requests_are_limited_while_a_stream_runs(workers, tenant_gateway):
    beta = TENANT_KEYS["beta"]
    for worker in workers:
        set_faults(worker, step_delay_s=0.05)
    try:
        body = {"prompt": "Once", "max_tokens": 60, "ignore_eos": True}
        stream = Stream(tenant_gateway.url, COMPLETIONS, body, key=beta)
        assert stream.status == 200
        next(stream.events())
        refused = post(tenant_gateway.url, COMPLETIONS, {"prompt": "Once"}, key=beta)
        assert refused.status == 429 and refused.headers["retry-after"] == "1"
        assert "concurrent requests" in refused.json()["error"]["message"]
        assert list(stream.events())[-1] == b"[DONE]"
        stream.close()
        assert post(tenant_gateway.url, COMPLETIONS, {"prompt": "Once", "max_tokens": 1},
                    key=beta).status == 200  # fmt: skip
    finally:
        for worker in workers:
            set_faults(worker, step_delay_s=0)


def test_the_access_log_names_tenant_and_worker_but_no_prompt_or_key(tenant_gateway):
    secret_prompt = "the secret ingredient is cardamom"
    reply = post(tenant_gateway.url, COMPLETIONS, {"prompt": secret_prompt, "max_tokens": 2},
                 key=TENANT_KEYS["beta"])  # fmt: skip
    request_id = reply.headers["x-request-id"]
    deadline = time.monotonic() + 5
    while not (lines := [ln for ln in tenant_gateway.log if request_id in ln]):
        assert time.monotonic() < deadline, "no access log line"
        time.sleep(0.05)
    entry = json.loads(lines[0])
    assert entry["tenant"] == "beta" and entry["backend"] == reply.headers[BACKEND]
    assert entry["completion_tokens"] == 2 and entry["attempts"] == 1
    whole_log = "".join(tenant_gateway.log)
    assert "cardamom" not in whole_log
    assert not any(key in whole_log for key in (*TENANT_KEYS.values(), "worker-secret"))


def test_a_client_that_hangs_up_frees_the_worker(workers, gateway):
    for worker in workers:
        set_faults(worker, step_delay_s=0.05)
    try:
        body = {"prompt": "Once", "max_tokens": 400, "ignore_eos": True}
        stream = Stream(gateway.url, COMPLETIONS, body)
        events = stream.events()
        next(events), next(events)
        serving = next(w for w in workers if backend_name(w) == stream.headers[BACKEND])
        assert scrape(serving.url, "vllm:num_requests_running", model_name="stories260K") == 1
        stream.close()
        deadline = time.monotonic() + 10
        while scrape(serving.url, "vllm:num_requests_running", model_name="stories260K"):
            assert time.monotonic() < deadline, "the worker kept generating for nobody"
            time.sleep(0.1)
        assert scrape(gateway.url, "pagoda_gateway_requests_in_flight", tenant="anonymous") == 0
    finally:
        for worker in workers:
            set_faults(worker, step_delay_s=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_hold_queue_is_bounded_in_size_and_time(make_gateway):
    nowhere = f"http://127.0.0.1:{free_port()}"
    gateway = make_gateway([nowhere], "--hold-queue-size", "1", "--hold-timeout", "2")
    replies = {}
    held = threading.Thread(
        target=lambda: replies.setdefault("held", post(gateway.url, COMPLETIONS, {"prompt": "x"}))
    )
    started = time.monotonic()
    held.start()
    deadline = time.monotonic() + 5
    while scrape(gateway.url, "pagoda_gateway_hold_queue_length") != 1:
        assert time.monotonic() < deadline, "the request was not held"
        time.sleep(0.05)
    overflow = post(gateway.url, COMPLETIONS, {"prompt": "x"})
    assert overflow.status == 503 and overflow.headers["retry-after"]
    assert "already wait" in overflow.json()["error"]["message"]
    held.join(10)
    assert replies["held"].status == 503 and replies["held"].headers["retry-after"]
    assert 1.5 < time.monotonic() - started < 6
    assert re.search(r"within 2 s", replies["held"].json()["error"]["message"])


def test_a_held_request_is_served_once_a_worker_becomes_ready(make_gateway, worker_key_file):
    port = free_port()
    gateway = make_gateway([f"http://127.0.0.1:{port}"], "--hold-timeout", "120")
    replies = {}
    body = {"prompt": "Once", "max_tokens": 4}
    held = threading.Thread(
        target=lambda: replies.setdefault("held", post(gateway.url, COMPLETIONS, body))
    )
    held.start()
    time.sleep(0.5)
    # scale from zero: the worker starts now, on the port the gateway was told about
    worker = start_pagoda("serve", "--port", str(port), "--api-key-file", str(worker_key_file))
    try:
        held.join(150)
        assert replies["held"].status == 200
        assert replies["held"].json()["usage"]["completion_tokens"] == 4
    finally:
        worker.stop()


def test_a_body_that_never_arrives_gets_408(make_gateway, workers):
    gateway = make_gateway([w.url for w in workers], "--body-timeout", "1")
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"prompt": '
        )
        answer = connection.recv(65536).decode()
    assert answer.startswith("HTTP/1.1 408")
    assert "did not arrive within 1 s" in answer
