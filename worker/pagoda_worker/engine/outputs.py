"""What the engine hands back after each step."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum


class FinishReason(StrEnum):
    STOP = "stop"  # EOS, a stop token id or a stop string
    LENGTH = "length"  # max_tokens or the context window
    ABORT = "abort"  # aborted by the caller


@dataclass
class TokenLogprob:
    token_id: int
    logprob: float
    top: dict[int, float] = field(default_factory=dict)  # top-N alternatives, id -> logprob


@dataclass
class CompletionOutput:
    """One of the n completions of a request, cumulative plus what this step added."""

    index: int
    token_ids: list[int]
    text: str
    new_token_ids: list[int]
    new_text: str
    logprobs: list[TokenLogprob] | None
    new_logprobs: list[TokenLogprob] | None
    finish_reason: FinishReason | None = None
    cumulative_logprob: float | None = None  # when logprobs or best_of asked for it

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


def most_likely(completions: list[CompletionOutput], n: int) -> list[CompletionOutput]:
    """best_of: the n completions of highest cumulative logprob, numbered 0..n-1 in that order."""
    if len(completions) <= n:
        return completions
    ranked = sorted(completions, key=lambda c: -(c.cumulative_logprob or 0.0))[:n]
    return [replace(c, index=i) for i, c in enumerate(ranked)]


def followed_by(earlier: RequestOutput, later: RequestOutput) -> RequestOutput:
    """One output for two consecutive ones of a request: the later's state, both steps' news."""

    def joined(a: CompletionOutput, b: CompletionOutput) -> CompletionOutput:
        both = None if b.new_logprobs is None else (a.new_logprobs or []) + b.new_logprobs
        return replace(
            b,
            new_token_ids=a.new_token_ids + b.new_token_ids,
            new_text=a.new_text + b.new_text,
            new_logprobs=both,
        )

    return replace(
        later, outputs=[joined(a, b) for a, b in zip(earlier.outputs, later.outputs, strict=True)]
    )


@dataclass
class RequestMetrics:
    arrival_time: float
    scheduled_time: float | None = None  # first time the scheduler picked it
    first_token_time: float | None = None
    last_token_time: float | None = None
    finished_time: float | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool
    num_cached_tokens: int
    metrics: RequestMetrics
    # Per prompt token (None for the first), when asked for; complete once a token is out.
    prompt_logprobs: list[TokenLogprob | None] | None = None
