"""API keys, structured access logs with request ids, and the redacted audit log."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
import sys
import threading

import openai
import pytest
from pagoda_worker.server.audit import AuditLog, redact
from pagoda_worker.server.auth import API_KEY_ENV, APIKeyError, KeyChecker, load_api_keys

from tests.processes import wait_ready

pytestmark = pytest.mark.timeout(60)

KEY = "sk-test-0123456789abcdef"


def test_keys_come_from_a_file_and_the_environment(tmp_path):
    path = tmp_path / "keys"
    path.write_text("# team a\nkey-one\n\n  key-two  \n")
    assert load_api_keys(str(path), {}) == ["key-one", "key-two"]
    assert load_api_keys(None, {API_KEY_ENV: "a, b"}) == ["a", "b"]
    assert load_api_keys(str(path), {API_KEY_ENV: "a"}) == ["a", "key-one", "key-two"]
    assert load_api_keys(None, {}) == []


def test_unusable_key_files_are_refused(tmp_path):
    with pytest.raises(APIKeyError, match="cannot read"):
        load_api_keys(str(tmp_path / "missing"), {})
    (tmp_path / "empty").write_text("# nothing here\n")
    with pytest.raises(APIKeyError, match="holds no keys"):
        load_api_keys(str(tmp_path / "empty"), {})


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        (f"Bearer {KEY}", True),
        (f"bearer {KEY}", True),
        ("Bearer other-key", True),
        (f"Bearer {KEY}x", False),
        (f"Basic {KEY}", False),
        (KEY, False),
        ("Bearer ", False),
        (None, False),
    ],
)
def test_key_checker(header, allowed):
    assert KeyChecker([KEY, "other-key"]).allows(header) is allowed


def test_no_keys_means_no_checking():
    assert not KeyChecker([]).enabled


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("write to jane.doe+x@example.co.uk today", "write to [EMAIL] today"),
        ("my key is sk-abcdefghijklmnop1234", "my key is [SECRET]"),
        ("Authorization: Bearer abc.def-ghi", "Authorization: Bearer [REDACTED]"),
        ("card 4111 1111 1111 1111 ok", "card [CARD] ok"),
        ("call +1 415 555 1234 now", "call [PHONE] now"),
        ("from 10.1.2.3", "from [IP]"),
        ("Once upon a time, 3 cats in 2024 ran 12345 steps.", None),
    ],
)
def test_redaction(text, redacted):
    assert redact(text) == (redacted or text)


def test_audit_log_redacts_the_servers_own_keys_whatever_they_look_like(caplog):
    keys = ["correct-horse-battery", "plainword42"]
    audit = AuditLog(enabled=True, api_keys=keys)
    with caplog.at_level(logging.INFO, logger="pagoda.audit"):
        audit.record("r1", "completions", "my key is correct-horse-battery ok", ["plainword42!"])
    [entry] = [json.loads(r.getMessage()) for r in caplog.records if r.name == "pagoda.audit"]
    assert entry["prompt"] == "my key is [API_KEY] ok"
    assert entry["completions"] == ["[API_KEY]!"]


def test_audit_log_is_silent_when_off(caplog):
    with caplog.at_level(logging.INFO, logger="pagoda.audit"):
        AuditLog(enabled=False).record("r1", "completions", "secret prompt", ["secret answer"])
    assert not caplog.records


async def test_api_keys_guard_the_api_but_not_the_probes(make_server):
    guarded = make_server(api_keys=[KEY])
    for path in ("/health", "/ready", "/metrics", "/version"):
        assert (await guarded.fetch("GET", path)).status == 200, path
    with pytest.raises(openai.AuthenticationError):
        guarded.client(api_key="wrong").models.list()
    reply = await guarded.fetch("POST", "/v1/completions", json={"prompt": "x"})
    assert reply.status == 401
    assert reply.headers["WWW-Authenticate"] == "Bearer"
    assert reply.json()["error"]["code"] == "invalid_api_key"
    response = guarded.client(api_key=KEY).completions.create(
        model="stories260K", prompt="Once", max_tokens=3
    )
    assert response.choices[0].text


async def access_entries(caplog, count: int) -> list[dict]:
    """The server logs a request just after answering it: wait for the lines to arrive."""
    for _ in range(200):
        records = [r for r in caplog.records if r.name == "pagoda.access"]
        if len(records) >= count:
            return [json.loads(r.getMessage()) for r in records]
        await asyncio.sleep(0.01)
    raise AssertionError(f"expected {count} access log lines, got {len(records)}")


async def test_access_logs_are_json_lines_with_request_ids_and_no_secrets(make_server, caplog):
    logged = make_server(api_keys=[KEY])
    with caplog.at_level(logging.INFO, logger="pagoda.access"):
        logged.client(api_key=KEY).completions.create(
            model="stories260K",
            prompt="Once",
            max_tokens=3,
            extra_headers={"X-Request-Id": "req-42"},
        )
        await logged.fetch("GET", "/v1/models", headers={"Authorization": "Bearer sk-wrong-999"})
        entries = await access_entries(caplog, count=2)
    [completion] = [e for e in entries if e["request_id"] == "req-42"]
    assert completion["path"] == "/v1/completions" and completion["status"] == 200
    assert completion["prompt_tokens"] == 2 and completion["completion_tokens"] == 3
    assert completion["finish_reasons"] == ["length"]
    assert any(e["status"] == 401 for e in entries)
    everything = "\n".join(r.getMessage() for r in caplog.records)
    assert KEY not in everything and "sk-wrong-999" not in everything
    assert "Once" not in everything  # prompts stay out of access logs


async def test_audit_log_records_redacted_prompts_and_completions(make_server, caplog):
    audited = make_server(audit_log=True)
    with caplog.at_level(logging.INFO, logger="pagoda.audit"):
        audited.client().chat.completions.create(
            model="stories260K",
            messages=[{"role": "user", "content": "Mail bob@example.com a story"}],
            max_tokens=4,
        )
    [record] = [json.loads(r.getMessage()) for r in caplog.records if r.name == "pagoda.audit"]
    assert record["endpoint"] == "chat.completions"
    assert record["prompt"] == "user: Mail [EMAIL] a story"
    assert len(record["completions"]) == 1 and record["request_id"]


def test_pagoda_serve_audit_log_redacts_its_own_key_pasted_into_a_prompt(stories_dir, tmp_path):
    """Through a real `pagoda serve --audit-log`: the key looks like nothing the patterns know."""
    key = "correct-horse-battery-staple"
    (tmp_path / "keys").write_text(key + "\n")
    command = [sys.executable, "-m", "pagoda.cli", "serve", "--port", "0", "--audit-log"]
    command += ["--model", str(stories_dir), "--api-key-file", str(tmp_path / "keys")]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    try:
        for line in proc.stderr:
            if found := re.search(r"probes answer on (http://[\d.]+:\d+)/health", line):
                break
        else:
            raise AssertionError(f"pagoda serve did not start (exit {proc.wait()})")
        reader.start()
        url = found.group(1)
        wait_ready(url)
        client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)
        client.completions.create(
            model="stories260K", prompt=f"my password is {key} ok", max_tokens=3
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    reader.join(timeout=10)
    audits = [json.loads(line) for line in lines if line.startswith('{"request_id"')]
    [entry] = [a for a in audits if a["endpoint"] == "completions"]
    assert entry["prompt"] == "my password is [API_KEY] ok"
    assert key not in "".join(lines)
