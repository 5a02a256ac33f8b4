"""Request bodies of the OpenAI API, as pydantic models.

Types are checked strictly and unknown fields are refused, as OpenAI does, with one leniency
that OpenAI and vLLM share: numbers may come as strings ("0.7"). Non-finite numbers (JSON's
non-standard `Infinity` and `NaN`, or "inf") are refused. Value ranges are checked once, by
SamplingParams. `None` means "the default", because many clients send explicit nulls.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, StringConstraints


def _not_a_bool(value):
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    return value


# A number, or a string holding one; never a boolean.
Number = Annotated[float, Strict(False), BeforeValidator(_not_a_bool)]
Integer = Annotated[int, Strict(False), BeforeValidator(_not_a_bool)]
# Function and schema names, as OpenAI spells them.
Name = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
JSONSchema = dict  # a JSON schema, checked by compiling it (structured.py)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class StreamOptions(_Body):
    include_usage: bool = False
    continuous_usage_stats: bool = False  # vLLM's: running usage in every chunk


class SamplingFields(_Body):
    """Fields shared by completions and chat completions."""

    model: str | None = None
    n: Integer | None = None
    temperature: Number | None = None
    top_p: Number | None = None
    top_k: Integer | None = None  # -1 or 0 disables (vLLM accepts both)
    min_p: Number | None = None
    presence_penalty: Number | None = None
    frequency_penalty: Number | None = None
    repetition_penalty: Number | None = None
    seed: Integer | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    logit_bias: dict[str, Number] | None = None  # token id (a JSON key) -> bias in [-100, 100]
    user: str | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def continuous_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.continuous_usage_stats)


class JSONSchemaFormat(_Body):
    name: Name
    description: str | None = None
    schema_: JSONSchema | None = Field(None, alias="schema")  # none: any JSON object
    strict: bool | None = None


class ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None  # with type json_schema only


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: Integer | None = None
    logprobs: Integer | None = None  # top-N per token, as in the legacy completions API
    best_of: Integer | None = None  # completions generated per prompt; the n most likely return
    echo: bool | None = None  # each choice's text starts with its prompt
    response_format: ResponseFormat | None = None


class TextPart(_Body):
    type: Literal["text"]
    text: str


class FunctionCall(_Body):
    name: str
    arguments: str  # a JSON object, as text


class ToolCall(_Body):
    id: str
    type: Literal["function"]
    function: FunctionCall


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None  # assistant messages: the calls it made
    tool_call_id: str | None = None  # tool messages: the call this one answers

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class FunctionDefinition(_Body):
    name: Name
    description: str | None = None
    parameters: JSONSchema | None = None  # none: the function takes no arguments
    strict: bool | None = None


class Tool(_Body):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(_Body):
    name: str


class NamedToolChoice(_Body):
    type: Literal["function"]
    function: FunctionName


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage]
    max_tokens: Integer | None = None  # deprecated by OpenAI in favour of max_completion_tokens
    max_completion_tokens: Integer | None = None
    logprobs: bool | None = None
    top_logprobs: Integer | None = None
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
