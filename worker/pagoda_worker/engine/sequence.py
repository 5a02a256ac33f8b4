"""Request and sequence state. A request with n completions owns n sequences."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from pagoda_worker.engine.outputs import FinishReason, TokenLogprob
from pagoda_worker.engine.sampling_params import SamplingParams

if TYPE_CHECKING:
    from llguidance import LLMatcher


class SequenceStatus(enum.Enum):
    WAITING = enum.auto()
    RUNNING = enum.auto()
    FINISHED = enum.auto()


# Stands in the token ids for an unread token (unread_tokens.py): sampled on the device, its id
# not read by the host yet. The host writes the id in once it has read it.
UNREAD = -1


@dataclass(eq=False)
class Sequence:
    request: Request
    index: int  # which of the request's n completions
    token_ids: list[int]  # prompt + generated so far, ending in num_unread UNREAD entries
    generator: torch.Generator | None
    status: SequenceStatus = SequenceStatus.WAITING
    num_computed_tokens: int = 0  # tokens whose KV is in the cache
    block_table: list[int] = field(default_factory=list)
    block_hashes: list[bytes] = field(default_factory=list)  # of the leading full, computed blocks
    num_cached_tokens: int = 0  # prompt tokens that came from the prefix cache
    finish_reason: FinishReason | None = None
    num_unread: int = 0  # trailing unread tokens: sampled, their ids not read by the host yet
    # With params.structured_output: what may come next (grammar.py), advanced as tokens are read.
    matcher: LLMatcher | None = None

    @property
    def params(self) -> SamplingParams:
        return self.request.params

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.request.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_read_tokens(self) -> int:
        """Tokens whose ids the host knows: all but the unread ones."""
        return self.num_tokens - self.num_unread

    @property
    def output_token_ids(self) -> list[int]:
        """Generated tokens the host knows (unread ones left out)."""
        return self.token_ids[self.num_prompt_tokens : self.num_read_tokens]

    @property
    def has_last_token(self) -> bool:
        """Whether every token max_tokens allows has been sampled (the last may be unread),
        so that computing another step for it would be wasted."""
        return self.num_tokens - self.num_prompt_tokens >= self.params.max_tokens

    def add_unread(self) -> None:
        """Append a token that was sampled on the device and not read yet."""
        self.token_ids.append(UNREAD)
        self.num_unread += 1

    def read_token(self, token_id: int) -> None:
        """Write in the oldest unread token's id (steps are read in launch order)."""
        self.token_ids[self.num_read_tokens] = token_id
        self.num_unread -= 1

    def drop_unread(self) -> None:
        """A finished sequence keeps no token sampled after its end."""
        del self.token_ids[self.num_read_tokens :]
        self.num_unread = 0

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def num_uncomputed_tokens(self) -> int:
        return self.num_tokens - self.num_computed_tokens

    def waits_for_sibling(self) -> bool:
        """Completions 1..n-1 start once completion 0 has put the prompt's KV in the cache,
        so that they share its blocks instead of computing the prompt n times."""
        if self.index == 0 or self.num_computed_tokens or self.num_cached_tokens:
            return False
        first = self.request.seqs[0]
        return not first.is_finished and first.num_computed_tokens < self.num_prompt_tokens


@dataclass(eq=False)
class Request:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    cache_salt: bytes  # prefix-cache namespace: shared by all, or private to this request
    seqs: list[Sequence] = field(default_factory=list)
    # With params.prompt_logprobs: one entry per prompt token, filled in as the prompt is
    # computed (complete once a token is generated); the first token has none.
    prompt_logprobs: list[TokenLogprob | None] | None = None
    scheduled_time: float | None = None  # wall clock of its first scheduling
    reported: bool = False  # whether an output about it went out yet

    @property
    def scores_prompt(self) -> bool:
        return self.prompt_logprobs is not None

    @property
    def is_finished(self) -> bool:
        return all(s.is_finished for s in self.seqs)
