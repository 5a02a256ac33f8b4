"""Tool-call parsers of both families: whole texts, and the same texts streamed in pieces."""

from __future__ import annotations

import random

import pytest
from pagoda_worker.server.tool_parsers import (
    ForcedCallsParser,
    HermesParser,
    Llama3JSONParser,
    ParsedCall,
    parser_for,
)

WEATHER = ParsedCall("get_weather", '{"city": "Paris", "unit": "c"}')
TIME = ParsedCall("get_time", '{"zone": "CET"}')


def parse(parser_type, pieces: list[str]) -> tuple[str, list[ParsedCall]]:
    parser = parser_type()
    events = [event for piece in pieces for event in parser.feed(piece)] + parser.finish()
    content = "".join(e for e in events if isinstance(e, str))
    return content, [e for e in events if isinstance(e, ParsedCall)]


def random_pieces(text: str, seed: int) -> list[str]:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(text)), k=min(len(text) - 1, rng.randint(1, 12))))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


def hermes_call(name: str, arguments: str) -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {arguments}}}\n</tool_call>'


HERMES_CASES = {
    "one-call": (hermes_call("get_weather", WEATHER.arguments), "", [WEATHER]),
    "two-calls": (
        hermes_call("get_weather", WEATHER.arguments)
        + "\n"
        + hermes_call("get_time", '{"zone": "CET"}'),
        "",
        [WEATHER, TIME],
    ),
    "text-around": (
        "Let me check.\n\n" + hermes_call("get_weather", WEATHER.arguments) + "\nOne moment.\n",
        "Let me check.\nOne moment.",
        [WEATHER],
    ),
    "no-closing-tag": (
        '<tool_call>\n{"name": "get_time", "arguments": {"zone": "CET"}}',
        "",
        [TIME],
    ),
    "malformed-json": (
        'Hi <tool_call>{"name": "get_time", "arguments": {"zone": }</tool_call>',
        'Hi <tool_call>{"name": "get_time", "arguments": {"zone": }</tool_call>',
        [],
    ),
    "not-a-call": (
        '<tool_call>{"function": "get_time"}</tool_call>',
        '<tool_call>{"function": "get_time"}</tool_call>',
        [],
    ),
    "cut-inside-a-call": (
        'Sure. <tool_call>{"name": "get_ti',
        'Sure. <tool_call>{"name": "get_ti',
        [],
    ),
    "plain-text": (
        "Once upon a time <tool there was\n\n",
        "Once upon a time <tool there was\n\n",
        [],
    ),
    "partial-marker-at-the-end": ("The end <tool_ca", "The end <tool_ca", []),
}

LLAMA_CASES = {
    "one-call": (
        '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "c"}}',
        "",
        [WEATHER],
    ),
    "python-tag": (
        '<|python_tag|>{"name": "get_time", "parameters": {"zone": "CET"}}',
        "",
        [TIME],
    ),
    "two-calls": (
        ' {"name": "get_weather", "parameters": {"city": "Paris", "unit": "c"}}; '
        '{"name": "get_time", "arguments": {"zone": "CET"}}',
        "",
        [WEATHER, TIME],
    ),
    "text-after": (
        '{"name": "get_time", "parameters": {"zone": "CET"}}\nDone.',
        "Done.",
        [TIME],
    ),
    "text-first-is-no-call": (
        'I will call {"name": "get_time", "parameters": {}}',
        'I will call {"name": "get_time", "parameters": {}}',
        [],
    ),
    "json-that-is-no-call": ('{"answer": 42}', '{"answer": 42}', []),
    "malformed-json": (
        '<|python_tag|>{"name": "get_time", "parameters": {"zone": CET}}',
        '<|python_tag|>{"name": "get_time", "parameters": {"zone": CET}}',
        [],
    ),
    "cut-inside-a-call": ('{"name": "get_time", "para', '{"name": "get_time", "para', []),
    "plain-text": ("\nOnce upon a time ", "\nOnce upon a time ", []),
}


def cases(table: dict):
    return [pytest.param(*case, id=name) for name, case in table.items()]


@pytest.mark.parametrize(("text", "content", "calls"), cases(HERMES_CASES))
def test_hermes_whole_and_streamed(text, content, calls):
    assert parse(HermesParser, [text]) == (content, calls)
    for seed in range(20):
        assert parse(HermesParser, random_pieces(text, seed)) == (content, calls)
    assert parse(HermesParser, list(text)) == (content, calls)


@pytest.mark.parametrize(("text", "content", "calls"), cases(LLAMA_CASES))
def test_llama_whole_and_streamed(text, content, calls):
    assert parse(Llama3JSONParser, [text]) == (content, calls)
    for seed in range(20):
        assert parse(Llama3JSONParser, random_pieces(text, seed)) == (content, calls)
    assert parse(Llama3JSONParser, list(text)) == (content, calls)


def test_hermes_streams_text_before_a_call_and_each_call_once_complete():
    parser = HermesParser()
    assert parser.feed("Let me ") == ["Let me"]  # the space waits: a call may follow
    assert parser.feed("check <tool") == [" check"]  # "<tool" may begin a call
    assert parser.feed('_call>{"name": "get_time", ') == []
    assert parser.feed('"arguments": {"zone": "CET"}}</tool_call>') == [TIME]
    assert parser.feed("\n<tool_call>") == []
    assert parser.feed('{"name": "get_time", "arguments": {"zone": "CET"}}</tool_call>') == [TIME]
    assert parser.finish() == []


def test_llama_emits_each_call_as_it_completes():
    parser = Llama3JSONParser()
    assert parser.feed('{"name": "get_time", "parameters": {"zone": "CET"}') == []
    assert parser.feed("}; ") == [TIME]
    assert parser.feed('{"name": "get_time", "parameters": {"zone": "CET"}}') == [TIME]
    assert parser.finish() == []


def test_arguments_keep_non_ascii_text():
    text = hermes_call("get_weather", '{"city": "Zürich"}')
    assert parse(HermesParser, [text])[1] == [ParsedCall("get_weather", '{"city": "Zürich"}')]


@pytest.mark.parametrize(
    ("text", "content", "calls"),
    [
        ('[{"name": "get_time", "arguments": {"zone": "CET"}}]', "", [TIME]),
        (
            '[{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}, '
            '{"name": "get_time", "arguments": {"zone": "CET"}}]',
            "",
            [WEATHER, TIME],
        ),
        ('[{"name": "get_time", "arguments": {"zo', '[{"name": "get_time", "arguments": {"zo', []),
        ("[]", "[]", []),
    ],
    ids=["one", "two", "cut-by-max-tokens", "empty"],
)
def test_forced_calls(text, content, calls):
    assert parse(ForcedCallsParser, random_pieces(text, seed=1)) == (content, calls)


def test_the_family_picks_the_format():
    assert parser_for("llama") is Llama3JSONParser
    assert parser_for("qwen2") is HermesParser
    assert parser_for("qwen3") is HermesParser
    assert parser_for(None) is HermesParser
