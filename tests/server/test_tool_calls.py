"""Tool calling through the official `openai` client: forced calls (required, named) that the
grammar keeps valid, streamed calls, the tool-role round trip, `none` and `auto` with a model
that answers in text, and every request the API refuses."""

from __future__ import annotations

import json
import re
from typing import Annotated

import jsonschema
import openai
import pytest
from pagoda_worker.server.prompts import chat_prompt
from pagoda_worker.server.protocol import ChatMessage
from pydantic import BaseModel, Field
from transformers import AutoTokenizer

pytestmark = pytest.mark.timeout(120)

CALL_ID = re.compile(r"^call_[A-Za-z0-9]{24}$")
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def function(name: str, parameters: dict) -> dict:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


WEATHER = function(
    "get_weather",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 10},
            "unit": {"enum": ["c", "f"]},
        },
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
)
TIME = function(
    "get_time",
    {
        "type": "object",
        "properties": {"zone": {"enum": ["UTC", "CET", "PST"]}},
        "required": ["zone"],
        "additionalProperties": False,
    },
)
TOOLS = [WEATHER, TIME]
PARAMETERS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
# stories260K never closes a JSON array by itself: with this bias on "]" (token 509) its lists
# of calls end after one to a few, inside the context window.
CLOSE_LISTS = {"509": 21}


def chat(server, **request):
    request = {"model": "stories260K", "messages": ASK} | request
    return server.client().chat.completions.create(**request)


def prompt_length(stories_dir, messages: list[dict], tools: list[dict]) -> int:
    """Tokens in the prompt of these messages, with the tools shown (plain template)."""
    tokenizer = AutoTokenizer.from_pretrained(stories_dir)
    return len(chat_prompt([ChatMessage.model_validate(m) for m in messages], tokenizer, tools))


def check_calls(choice, parameters: dict[str, dict]) -> list:
    """The calls are OpenAI's shape, name known tools, and their arguments are valid."""
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    for call in calls:
        assert CALL_ID.match(call.id) and call.type == "function"
        jsonschema.validate(json.loads(call.function.arguments), parameters[call.function.name])
    assert len({call.id for call in calls}) == len(calls)
    return calls


def test_required_gives_valid_calls(server):
    counts = []
    for seed in range(3):
        response = chat(
            server,
            tools=TOOLS,
            tool_choice="required",
            temperature=1.0,
            seed=seed,
            n=2,
            logit_bias=CLOSE_LISTS,
        )
        counts += [len(check_calls(choice, PARAMETERS)) for choice in response.choices]
    assert min(counts) >= 1 and max(counts) > 1  # parallel calls are allowed by default


def test_parallel_tool_calls_false_gives_one_call(server):
    response = chat(
        server, tools=TOOLS, tool_choice="required", parallel_tool_calls=False, temperature=0
    )
    assert len(check_calls(response.choices[0], PARAMETERS)) == 1


def test_a_named_function_is_the_one_called(server):
    choice = {"type": "function", "function": {"name": "get_time"}}
    response = chat(server, tools=TOOLS, tool_choice=choice, temperature=1.0, seed=3, n=3)
    for choice in response.choices:
        [call] = check_calls(choice, PARAMETERS)
        assert call.function.name == "get_time"


class Place(BaseModel):
    town: Annotated[str, Field(max_length=8)]


class Trip(BaseModel):
    start: Place
    stops: Annotated[list[Place], Field(max_length=2)]


def test_parameters_with_definitions_of_their_own(server):
    """The SDK's pydantic tools refer to "#/$defs/...": still right inside the calls' grammar."""
    tool = openai.pydantic_function_tool(Trip)
    response = chat(
        server, tools=[tool], tool_choice="required", parallel_tool_calls=False, temperature=0
    )
    [call] = check_calls(response.choices[0], {"Trip": tool["function"]["parameters"]})
    Trip.model_validate_json(call.function.arguments)


def test_streamed_calls_add_up_to_the_whole_ones(server):
    request = dict(
        tools=TOOLS, tool_choice="required", temperature=1.0, seed=0, logit_bias=CLOSE_LISTS
    )
    whole = chat(server, **request).choices[0]
    chunks = list(chat(server, stream=True, **request))
    streamed: dict[int, dict] = {}
    for chunk in chunks:
        for delta in chunk.choices[0].delta.tool_calls or []:
            entry = streamed.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] += delta.id or ""
            entry["name"] += delta.function.name or ""
            entry["arguments"] += delta.function.arguments or ""
    expected = [(c.function.name, c.function.arguments) for c in check_calls(whole, PARAMETERS)]
    assert len(expected) > 1  # one delta per call, each with its own index
    assert [(s["name"], s["arguments"]) for _, s in sorted(streamed.items())] == expected
    assert all(CALL_ID.match(s["id"]) for s in streamed.values())
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_the_tool_role_round_trip_gets_a_new_answer(server, stories_dir):
    first = chat(
        server, tools=TOOLS, tool_choice="required", parallel_tool_calls=False, temperature=0
    ).choices[0]
    result = {"role": "tool", "tool_call_id": first.message.tool_calls[0].id, "content": "22 C"}
    # The message goes back as it came, as the SDK's examples do.
    answer = chat(
        server, messages=[*ASK, first.message, result], tools=TOOLS, max_tokens=20, temperature=0
    )
    assert answer.choices[0].message.content
    assert answer.choices[0].message.tool_calls is None
    sent = [*ASK, first.message.model_dump(exclude_unset=True), result]
    assert answer.usage.prompt_tokens == prompt_length(stories_dir, sent, TOOLS)


def test_none_answers_as_if_there_were_no_tools(server):
    plain = chat(server, max_tokens=30, temperature=0).choices[0]
    none = chat(server, tools=TOOLS, tool_choice="none", max_tokens=30, temperature=0).choices[0]
    assert none.message.content == plain.message.content
    assert none.message.tool_calls is None
    assert none.finish_reason == plain.finish_reason


def test_auto_shows_the_tools_and_returns_a_text_answer_as_content(server, stories_dir):
    response = chat(server, tools=TOOLS, max_tokens=30, temperature=0)
    [choice] = response.choices
    assert choice.message.content and choice.message.tool_calls is None
    assert choice.finish_reason in ("stop", "length")
    assert response.usage.prompt_tokens == prompt_length(stories_dir, ASK, TOOLS)


NAMED_UNKNOWN = {"type": "function", "function": {"name": "get_mood"}}
BAD_SCHEMA = function("get_mood", {"type": "objekt"})
NOT_ANSWERED = [*ASK, {"role": "tool", "content": "22 C"}]
BAD_ARGUMENTS = [
    *ASK,
    {
        "role": "assistant",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{"}}
        ],
    },
]


@pytest.mark.parametrize(
    ("request_fields", "param"),
    [
        (dict(tools=TOOLS, tool_choice=NAMED_UNKNOWN), "tool_choice.function.name"),
        (dict(tool_choice="required"), "tool_choice"),
        (dict(tool_choice=NAMED_UNKNOWN), "tool_choice"),
        (dict(tools=[WEATHER, TIME, WEATHER]), "tools[2].function.name"),
        (dict(tools=[WEATHER, BAD_SCHEMA]), "tools[1].function.parameters"),
        (dict(messages=NOT_ANSWERED), "messages[1].tool_call_id"),
        (dict(messages=BAD_ARGUMENTS), "messages[1].tool_calls[0].function.arguments"),
        (
            dict(tools=TOOLS, tool_choice="required", response_format={"type": "json_object"}),
            "response_format",
        ),
        (dict(tools=[function("no spaces", {})]), "tools[0].function.name"),
        (dict(tool_choice="sometimes"), "tool_choice"),
    ],
    ids=[
        "named-unknown",
        "required-without-tools",
        "named-without-tools",
        "duplicate-names",
        "bad-parameters",
        "tool-without-call-id",
        "arguments-not-json",
        "forced-with-response-format",
        "bad-function-name",
        "unknown-choice",
    ],
)
def test_refused_with_the_field_named(server, request_fields, param):
    with pytest.raises(openai.BadRequestError) as refused:
        chat(server, **request_fields)
    error = refused.value.body
    assert error["param"] == param, error
    assert error["type"] == "invalid_request_error"
    assert refused.value.status_code == 400
