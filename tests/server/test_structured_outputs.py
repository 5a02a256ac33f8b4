"""`response_format` through the official `openai` client: every completion is JSON that
matches its schema, on chat and completions, whatever the sampling, also next to other
requests in one batch; schemas the engine cannot follow are refused up front."""

from __future__ import annotations

import asyncio
import json

import jsonschema
import openai
import pytest
from pydantic import BaseModel

from tests.schemas import PERSON

pytestmark = pytest.mark.timeout(180)

NUMBERS = {"type": "array", "items": {"type": "integer", "maximum": 99}, "maxItems": 4}
PROMPT = "Once upon a time, Lily"
MESSAGES = [{"role": "user", "content": "Tell me about Lily."}]
# stories260K never closes a string, a list or an object by itself: these biases on '"' (436),
# ']' (509) and '}' (128) let free-form JSON end inside the context window.
CLOSE_JSON = {"436": 8, "509": 21, "128": 18}


def schema_format(schema: dict, name: str = "person") -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def complete(server, endpoint: str, **request) -> list[tuple[str, str]]:
    """(text, finish_reason) of every choice."""
    client = server.client()
    if endpoint == "chat":
        response = client.chat.completions.create(
            model="stories260K", messages=MESSAGES, max_tokens=200, **request
        )
        return [(c.message.content, c.finish_reason) for c in response.choices]
    response = client.completions.create(
        model="stories260K", prompt=PROMPT, max_tokens=200, extra_body=request
    )
    return [(c.text, c.finish_reason) for c in response.choices]


def completed_json(choices: list[tuple[str, str]]) -> list:
    assert all(reason == "stop" for _, reason in choices), choices
    return [json.loads(text) for text, _ in choices]


SAMPLINGS = [
    pytest.param(dict(temperature=0), id="greedy"),
    *(pytest.param(dict(temperature=1.0, seed=s, n=3), id=f"seed{s}-n3") for s in range(3)),
]


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_every_sample_matches_the_schema(server, endpoint, sampling):
    choices = complete(server, endpoint, response_format=schema_format(PERSON), **sampling)
    assert len(choices) == sampling.get("n", 1)
    for value in completed_json(choices):
        jsonschema.validate(value, PERSON)


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_json_object_gives_json_objects(server, endpoint):
    for seed in range(3):
        choices = complete(
            server,
            endpoint,
            response_format={"type": "json_object"},
            temperature=1.0,
            seed=seed,
            n=3,
            logit_bias=CLOSE_JSON,
        )
        assert all(isinstance(value, dict) for value in completed_json(choices))


def test_text_format_is_no_constraint(server):
    plain = complete(server, "chat", temperature=0, max_completion_tokens=30)
    text = complete(
        server, "chat", temperature=0, max_completion_tokens=30, response_format={"type": "text"}
    )
    assert text == plain
    with pytest.raises(json.JSONDecodeError):
        json.loads(plain[0][0])  # the model writes stories, not JSON


def test_streamed_json_adds_up_to_the_whole(server):
    request = dict(
        model="stories260K",
        messages=MESSAGES,
        response_format=schema_format(PERSON),
        temperature=0,
    )
    client = server.client()
    whole = client.chat.completions.create(**request).choices[0]
    chunks = list(client.chat.completions.create(stream=True, **request))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.message.content
    assert chunks[-1].choices[0].finish_reason == whole.finish_reason == "stop"
    jsonschema.validate(json.loads(whole.message.content), PERSON)


class CalendarEvent(BaseModel):  # the SDK's own structured-outputs example
    name: str
    date: str
    participants: list[str]


def test_the_sdks_parse_helper_gets_its_model_back(server):
    completion = server.client().chat.completions.parse(
        model="stories260K",
        messages=[
            {"role": "system", "content": "Extract the event information."},
            {"role": "user", "content": "Alice and Bob are going to a science fair on Friday."},
        ],
        response_format=CalendarEvent,
        temperature=0,
        logit_bias=CLOSE_JSON,
    )
    message = completion.choices[0].message
    assert isinstance(message.parsed, CalendarEvent)
    assert message.parsed == CalendarEvent.model_validate_json(message.content)


async def test_different_schemas_and_none_share_a_batch(server):
    client = server.async_client()

    async def chat(**request) -> str:
        response = await client.chat.completions.create(
            model="stories260K", messages=MESSAGES, max_tokens=200, temperature=0, **request
        )
        [choice] = response.choices
        return choice.message.content

    async def story() -> str:
        response = await client.completions.create(
            model="stories260K", prompt=PROMPT, max_tokens=200, temperature=0
        )
        return response.choices[0].text

    alone = [await chat(), await story()]
    person, numbers, free_chat, free_story, obj = await asyncio.gather(
        chat(response_format=schema_format(PERSON)),
        chat(response_format=schema_format(NUMBERS, name="numbers")),
        chat(),
        story(),
        chat(response_format={"type": "json_object"}, logit_bias=CLOSE_JSON),
    )
    jsonschema.validate(json.loads(person), PERSON)
    jsonschema.validate(json.loads(numbers), NUMBERS)
    assert isinstance(json.loads(obj), dict)
    assert [free_chat, free_story] == alone  # the constrained neighbours changed nothing


BAD_SCHEMA = {"type": "objekt"}


@pytest.mark.parametrize(
    ("endpoint", "response_format", "param"),
    [
        ("chat", schema_format(BAD_SCHEMA), "response_format.json_schema.schema"),
        ("completions", schema_format(BAD_SCHEMA), "response_format.json_schema.schema"),
        (
            "chat",
            schema_format({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}),
            "response_format.json_schema.schema",
        ),
        ("chat", {"type": "json_schema"}, "response_format.json_schema"),
        (
            "completions",
            {"type": "json_object", "json_schema": {"name": "x", "schema": PERSON}},
            "response_format.json_schema",
        ),
        (
            "chat",
            {"type": "json_schema", "json_schema": {"name": "a b"}},
            "response_format.json_schema.name",
        ),
        ("chat", {"type": "xml"}, "response_format.type"),
    ],
    ids=[
        "chat-bad-type",
        "completions-bad-type",
        "dangling-ref",
        "schema-missing",
        "schema-with-json-object",
        "bad-name",
        "unknown-type",
    ],
)
def test_bad_formats_are_refused_with_the_field_named(server, endpoint, response_format, param):
    with pytest.raises(openai.BadRequestError) as refused:
        complete(server, endpoint, response_format=response_format)
    error = refused.value.body
    assert error["param"] == param, error
    assert refused.value.status_code == 400
