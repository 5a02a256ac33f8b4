"""Every kind of bad request gets its status and an OpenAI error body naming the field."""

from __future__ import annotations

import json

import openai
import pytest

pytestmark = pytest.mark.timeout(60)

COMPLETIONS = "/v1/completions"
CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Hello"}]


def too_many_tokens(n: int) -> list[int]:
    return [1] + [300] * (n - 1)


def bad(case: str, path: str, body, param: str | None, status: int = 400):
    return pytest.param(path, body, status, param, id=case)


# The body is a dict to send as JSON, or raw bytes.
CASES = [
    bad("malformed-json", COMPLETIONS, b'{"prompt": "x",', None),
    bad("body-not-an-object", COMPLETIONS, b"[1, 2]", None),
    bad("missing-prompt", COMPLETIONS, {"max_tokens": 3}, "prompt"),
    bad("prompt-wrong-type", COMPLETIONS, {"prompt": 5}, "prompt"),
    bad("prompt-bools", COMPLETIONS, {"prompt": [True, False]}, "prompt"),
    bad(
        "temperature-wrong-type", COMPLETIONS, {"prompt": "x", "temperature": "hot"}, "temperature"
    ),
    bad("max-tokens-float", COMPLETIONS, {"prompt": "x", "max_tokens": 2.5}, "max_tokens"),
    bad("stream-not-bool", COMPLETIONS, {"prompt": "x", "stream": "yes"}, "stream"),
    bad("unknown-field", COMPLETIONS, {"prompt": "x", "beam_width": 2}, "beam_width"),
    bad("best-of-on-chat", CHAT, {"messages": [], "best_of": 2}, "best_of"),
    bad("unknown-model", COMPLETIONS, {"prompt": "x", "model": "gpt-4"}, "model", 404),
    bad("empty-prompt-list", COMPLETIONS, {"prompt": []}, "prompt"),
    bad("empty-token-list", COMPLETIONS, {"prompt": [[1, 2], []]}, "prompt"),
    bad("token-outside-vocab", COMPLETIONS, {"prompt": [1, 99999]}, "prompt"),
    bad("prompt-beyond-context", COMPLETIONS, {"prompt": too_many_tokens(600)}, "prompt"),
    bad("prompt-plus-max-tokens", COMPLETIONS, {"prompt": "x", "max_tokens": 600}, "max_tokens"),
    bad("max-tokens-zero", COMPLETIONS, {"prompt": "x", "max_tokens": 0}, "max_tokens"),
    bad("max-tokens-negative", COMPLETIONS, {"prompt": "x", "max_tokens": -3}, "max_tokens"),
    bad("temperature-negative", COMPLETIONS, {"prompt": "x", "temperature": -0.5}, "temperature"),
    bad("top-p-zero", COMPLETIONS, {"prompt": "x", "top_p": 0}, "top_p"),
    bad("top-p-above-one", COMPLETIONS, {"prompt": "x", "top_p": 1.5}, "top_p"),
    bad(
        "too-many-stops", COMPLETIONS, {"prompt": "x", "stop": [f"s{i}" for i in range(17)]}, "stop"
    ),
    bad("n-zero", COMPLETIONS, {"prompt": "x", "n": 0}, "n"),
    bad("n-too-many", COMPLETIONS, {"prompt": "x", "n": 129}, "n"),
    bad("too-many-prompts", COMPLETIONS, {"prompt": ["x"] * 2049}, "prompt"),
    bad("logprobs-too-many", COMPLETIONS, {"prompt": "x", "logprobs": 21}, "logprobs"),
    bad(
        "penalty-out-of-range",
        COMPLETIONS,
        {"prompt": "x", "presence_penalty": 3},
        "presence_penalty",
    ),
    bad(
        "temperature-infinity",
        COMPLETIONS,
        b'{"prompt": "x", "temperature": Infinity}',
        "temperature",
    ),
    bad("top-p-nan", COMPLETIONS, b'{"prompt": "x", "top_p": NaN}', "top_p"),
    bad(
        "temperature-inf-string", COMPLETIONS, {"prompt": "x", "temperature": "inf"}, "temperature"
    ),
    bad(
        "temperature-overflow", COMPLETIONS, b'{"prompt": "x", "temperature": 1e999}', "temperature"
    ),
    bad("n-a-boolean", COMPLETIONS, {"prompt": "x", "n": True}, "n"),
    bad(
        "stream-options-without-stream",
        COMPLETIONS,
        {"prompt": "x", "stream_options": {"include_usage": True}},
        "stream_options",
    ),
    bad("prompt-over-the-character-bound", COMPLETIONS, {"prompt": "once " * 2000}, "prompt"),
    bad(
        "chat-messages-over-the-character-bound",
        CHAT,
        {"messages": [{"role": "user", "content": "once " * 2000}]},
        "messages",
    ),
    bad("chat-missing-messages", CHAT, {"max_tokens": 3}, "messages"),
    bad("chat-empty-messages", CHAT, {"messages": []}, "messages"),
    bad("chat-messages-wrong-type", CHAT, {"messages": "Hello"}, "messages"),
    bad(
        "chat-bad-role", CHAT, {"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"
    ),
    bad("chat-unknown-model", CHAT, {"messages": HELLO, "model": "gpt-4"}, "model", 404),
    bad("chat-beyond-context", CHAT, {"messages": HELLO, "max_tokens": 600}, "max_tokens"),
    bad(
        "chat-max-tokens-zero",
        CHAT,
        {"messages": HELLO, "max_completion_tokens": 0},
        "max_completion_tokens",
    ),
    bad("chat-top-p", CHAT, {"messages": HELLO, "top_p": 2}, "top_p"),
    bad("chat-top-logprobs-alone", CHAT, {"messages": HELLO, "top_logprobs": 2}, "top_logprobs"),
    bad(
        "chat-top-logprobs-too-many",
        CHAT,
        {"messages": HELLO, "logprobs": True, "top_logprobs": 30},
        "top_logprobs",
    ),
    bad("chat-too-many-stops", CHAT, {"messages": HELLO, "stop": ["a"] * 17}, "stop"),
    bad(
        "body-too-large",
        COMPLETIONS,
        b'{"prompt": "' + b"x" * (4 * 2**20) + b'"}',
        None,
        status=413,
    ),
    bad(
        "chat-completion-tokens-beyond-context",
        CHAT,
        {"messages": HELLO, "max_completion_tokens": 600},
        "max_completion_tokens",
    ),
]


@pytest.mark.parametrize(("path", "body", "status", "param"), CASES)
async def test_bad_request_gets_status_and_error_body(server, path, body, status, param):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = await server.fetch("POST", path, data=raw, headers={"Content-Type": "application/json"})
    assert reply.status == status
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]
    if param:
        assert param.split("[")[0] in error["message"]


async def test_numbers_may_come_as_strings_as_openai_and_vllm_accept(server):
    body = {"prompt": "Once", "max_tokens": "3", "temperature": "0", "n": "2", "seed": "7"}
    reply = await server.fetch("POST", COMPLETIONS, json=body)
    assert reply.status == 200
    choices = reply.json()["choices"]
    assert len(choices) == 2 and choices[0]["text"] == choices[1]["text"]  # greedy, twice
    assert reply.json()["usage"]["completion_tokens"] == 6


async def test_a_huge_text_prompt_is_refused_before_tokenizing(server):
    """4 MiB of text took ~3 s to tokenize before its 400, holding up everyone else."""
    huge = "Once upon a time " * (4 * 2**20 // 17 - 100)
    body = json.dumps({"prompt": huge, "max_tokens": 1}).encode()
    reply = await server.fetch("POST", COMPLETIONS, data=body)
    assert reply.status == 400
    assert "characters" in reply.json()["error"]["message"]
    assert reply.json()["error"]["code"] == "context_length_exceeded"


async def test_context_errors_say_how_long_the_context_is(server):
    reply = await server.fetch("POST", COMPLETIONS, json={"prompt": "x", "max_tokens": 600})
    error = reply.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert "512" in error["message"]


@pytest.mark.parametrize(
    ("path", "body", "param", "reason"),
    [
        (COMPLETIONS, {"prompt": [1, 99999]}, "prompt", "token ids must be in [0, 512)"),
        (CHAT, {"messages": HELLO, "logit_bias": {"600": 1}}, "logit_bias",
         "token ids must be in [0, 512)"),
    ],
)  # fmt: skip
async def test_the_engines_own_refusals_name_the_field(server, path, body, param, reason):
    """Checked in the engine process: its field and reason come back as a 400."""
    reply = await server.fetch("POST", path, json=body)
    assert reply.status == 400
    assert reply.json()["error"] == {
        "message": f"{param}: {reason}",
        "type": "invalid_request_error",
        "param": param,
        "code": None,
    }


async def test_unknown_model_is_404_with_the_openai_code(server):
    reply = await server.fetch("POST", COMPLETIONS, json={"prompt": "x", "model": "gpt-4"})
    assert reply.status == 404
    assert reply.json()["error"]["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):  # as against OpenAI or vLLM
        server.client().completions.create(model="gpt-4", prompt="x", max_tokens=1)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/v1/nothing", 404), ("GET", COMPLETIONS, 405), ("DELETE", "/v1/models", 405)],
)
async def test_unknown_routes_and_methods_get_error_bodies(server, method, path, status):
    reply = await server.fetch(method, path)
    assert reply.status == status
    assert reply.json()["error"]["type"] == "invalid_request_error"


async def test_the_server_still_serves_after_all_that(server):
    for path, body, _, _ in (case.values for case in CASES):
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        await server.fetch("POST", path, data=raw)
    reply = await server.fetch("POST", COMPLETIONS, json={"prompt": "Once", "max_tokens": 3})
    assert reply.status == 200
    assert server.state.model.engine.stats.num_running == 0
    assert server.state.in_flight == 0
