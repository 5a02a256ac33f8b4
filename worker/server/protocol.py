"""Request bodies of the OpenAI API, as pydantic models.

Types are checked strictly and unknown fields are refused, as OpenAI does, with one leniency
that OpenAI and vLLM share: numbers may come as strings ("0.7"). Non-finite numbers (JSON's
non-standard `Infinity` and `NaN`, or "inf") are refused. Value ranges are checked once, by
SamplingParams. `None` means "the default", because many clients send explicit nulls.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Strict


def _not_a_bool(value):
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    return value


# A number, or a string holding one; never a boolean.
Number = Annotated[float, Strict(False), BeforeValidator(_not_a_bool)]
Integer = Annotated[int, Strict(False), BeforeValidator(_not_a_bool)]


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


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: Integer | None = None
    logprobs: Integer | None = None  # top-N per token, as in the legacy completions API
    best_of: Integer | None = None  # completions generated per prompt; the n most likely return
    echo: bool | None = None  # each choice's text starts with its prompt


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage]
    max_tokens: Integer | None = None  # deprecated by OpenAI in favour of max_completion_tokens
    max_completion_tokens: Integer | None = None
    logprobs: bool | None = None
    top_logprobs: Integer | None = None
