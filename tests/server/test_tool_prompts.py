"""Tools, assistant tool calls and tool results in chat prompts: through a Hugging Face
template on Qwen's real tokenizer, and through the plain template of models without one."""

from __future__ import annotations

from pathlib import Path

import pytest
from pagoda_worker.server.errors import APIError
from pagoda_worker.server.prompts import chat_prompt, check_chat_messages
from pagoda_worker.server.protocol import ChatMessage
from transformers import AutoTokenizer

QWEN = Path(__file__).parents[3] / "shared/models/qwen3-8b-shape"

# The shape of Qwen's tool template (its folder here ships plain ChatML): tools as JSON in the
# system turn, calls with their arguments as JSON objects, results wrapped as a user turn.
HERMES_TEMPLATE = """\
{%- if tools %}<|im_start|>system
# Tools
<tools>
{% for tool in tools %}{{ tool | tojson }}
{% endfor %}</tools><|im_end|>
{% endif %}
{%- for m in messages %}
{%- if m.role == 'tool' %}<|im_start|>user
<tool_response>
{{ m.content }}
</tool_response><|im_end|>
{% else %}<|im_start|>{{ m.role }}
{{ m.content }}
{%- for c in m.tool_calls or [] %}<tool_call>
{{ {'name': c.function.name, 'arguments': c.function.arguments} | tojson }}
</tool_call>
{%- endfor %}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
ROUND_TRIP = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "22 C, sunny"},
]


def messages(raw: list[dict]) -> list[ChatMessage]:
    return [ChatMessage.model_validate(m) for m in raw]


@pytest.fixture(scope="module")
def qwen():
    if not QWEN.is_dir():
        pytest.skip(f"{QWEN} is not here")
    tokenizer = AutoTokenizer.from_pretrained(QWEN)
    tokenizer.chat_template = HERMES_TEMPLATE
    return tokenizer


def test_qwen_prompt_shows_the_tools_the_call_and_its_result(qwen):
    ids = chat_prompt(messages(ROUND_TRIP), qwen, tools=[WEATHER_TOOL])
    assert qwen.decode(ids) == (
        "<|im_start|>system\n# Tools\n<tools>\n"
        '{"type": "function", "function": {"name": "get_weather", "description": "Weather in a '
        'city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}\n'
        "</tools><|im_end|>\n"
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
        "<|im_start|>assistant\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Paris"}}\n'  # an object, not a string
        "</tool_call><|im_end|>\n"
        "<|im_start|>user\n<tool_response>\n22 C, sunny\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    tool_call = qwen.convert_tokens_to_ids("<tool_call>")
    assert ids.count(tool_call) == 1  # the marker is the model's own token, not its spelling


def test_qwen_prompt_without_tools_has_no_tools_section(qwen):
    ids = chat_prompt(messages(ROUND_TRIP[:1]), qwen, tools=None)
    assert qwen.decode(ids) == (
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n"
    )


@pytest.fixture(scope="module")
def stories(stories_dir):
    return AutoTokenizer.from_pretrained(stories_dir)


def test_plain_template_writes_tools_calls_and_results_as_lines(stories):
    ids = chat_prompt(messages(ROUND_TRIP), stories, tools=[WEATHER_TOOL])
    assert stories.decode(ids[1:]) == (
        'Tool: {"name": "get_weather", "description": "Weather in a city", "parameters": '
        '{"type": "object", "properties": {"city": {"type": "string"}}}}\n'
        "User: Weather in Paris?\n"
        'Tool call (call_1): {"name": "get_weather", "arguments": {"city": "Paris"}}\n'
        "Tool result (call_1): 22 C, sunny\n"
        "Assistant:"
    )


def test_plain_template_keeps_an_assistants_text_beside_its_calls(stories):
    raw = [dict(ROUND_TRIP[1], content="Checking.")]
    assert stories.decode(chat_prompt(messages(raw), stories)[1:]) == (
        "Assistant: Checking.\n"
        'Tool call (call_1): {"name": "get_weather", "arguments": {"city": "Paris"}}\n'
        "Assistant:"
    )


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        ({"role": "tool", "content": "22 C"}, "messages[1].tool_call_id"),
        (dict(ROUND_TRIP[1], role="user"), "messages[1].tool_calls"),
        (
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}
                ],
            },
            "messages[1].tool_calls[0].function.arguments",
        ),
    ],
    ids=["tool-without-call-id", "user-with-tool-calls", "arguments-not-an-object"],
)
def test_tool_fields_in_the_wrong_place_are_refused(raw, param):
    with pytest.raises(APIError) as refused:
        check_chat_messages(messages([ROUND_TRIP[0], raw]), max_chars=10_000)
    assert refused.value.param == param
    assert refused.value.status == 400
