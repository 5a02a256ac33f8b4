"""What the gateway reads in the events it relays: opening chunks, usage, and its own error
event."""

from __future__ import annotations

import json

import pytest
from pagoda_gateway.sse import DONE, Event, error_event, is_opening


def event(payload: dict) -> Event:
    return Event(b"data: " + json.dumps(payload).encode() + b"\n\n")


def chunk(**choice) -> dict:
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, **choice}]}


@pytest.mark.parametrize(
    "payload",
    [
        chunk(delta={"role": "assistant"}),
        chunk(delta={"role": "assistant", "content": ""}),  # vLLM's role chunk
        chunk(delta={}, finish_reason=None),
        {"object": "text_completion", "choices": [{"index": 0, "text": ""}]},
    ],
)
def test_a_chunk_without_a_token_is_an_opening(payload):
    assert is_opening(payload)


@pytest.mark.parametrize(
    "payload",
    [
        chunk(delta={"content": "Once"}),
        {"object": "text_completion", "choices": [{"index": 0, "text": "Once"}]},
        chunk(delta={}, finish_reason="length"),
        chunk(delta={"tool_calls": [{"index": 0, "function": {"name": "f"}}]}),
        chunk(delta={"reasoning_content": "hmm"}),
        {"choices": [{"index": 0, "delta": {"role": "assistant"}}, {"index": 1, "text": "x"}]},
        {"error": {"message": "engine overloaded", "type": "service_unavailable"}},
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 0}},
        None,
    ],
)
def test_a_token_finish_tool_call_error_or_usage_is_not_an_opening(payload):
    assert not is_opening(payload)


def test_the_payload_of_a_data_event():
    assert event(chunk(delta={"content": "x"})).payload() == chunk(delta={"content": "x"})
    assert Event(b'data: {"a": 1}\r\n\r\n').payload() == {"a": 1}


@pytest.mark.parametrize(
    "raw",
    [DONE, b"data: {not json\n\n", b": keep-alive\n\n", b"data: [1, 2]\n\n", b"event: x\n\n"],
)
def test_a_non_json_event_has_no_payload(raw):
    assert Event(raw).payload() is None


def test_done_and_usage_are_recognised_in_either_spacing():
    assert Event(DONE).done
    assert not Event(b"data: [DONE]\n").done
    assert Event(b'data: {"choices":[],"usage":{"total_tokens":3}}\n\n').carries_usage()
    assert event({"choices": [], "usage": {"total_tokens": 3}}).carries_usage()
    assert not Event(b'data: {"choices":[],"usage":null}\n\n').carries_usage()


def test_an_error_event_is_an_openai_error_body_then_done():
    raw = error_event("worker pod-1 closed the connection mid-stream")
    first, second, rest = raw.split(b"\n\n")
    assert rest == b""
    assert first.startswith(b"data: ")
    assert json.loads(first[len(b"data: ") :]) == {
        "error": {
            "message": "worker pod-1 closed the connection mid-stream",
            "type": "service_unavailable",
            "param": None,
            "code": None,
        }
    }
    assert second + b"\n\n" == DONE
    assert Event(first + b"\n\n").payload()["error"]["type"] == "service_unavailable"
    assert b'"type": "internal_error"' in error_event("x", error_type="internal_error")
