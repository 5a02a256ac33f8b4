"""Turns a batch of next-token logits into chosen tokens and the logprobs the API reports.

Order per row: raw logprobs (reported) -> logit bias -> penalties -> grammar mask -> temperature
-> top-k -> top-p -> min-p -> argmax (greedy) or an exponential race (random). The math is
vectorised over the batch; only the noise of seeded rows is drawn per row, from the row's own
generator, so a seeded row picks the same token whatever else is in the batch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from pagoda_worker.engine.sampling_params import SamplingParams


@dataclass
class SamplingRow:
    """One sequence in the batch."""

    params: SamplingParams
    prompt_token_ids: list[int]
    output_token_ids: list[int]  # the tokens the host has read
    generator: torch.Generator | None  # None: draw from the sampler's shared generator
    # The last output token may be unread (unread_tokens.py): its row in the previous step's
    # sampled ids (the sampler's `unread_ids`), for the penalties.
    unread_row: int | None = None


@dataclass
class TokenMask:
    """The tokens constrained rows may pick (grammar.py): bit j of word w allows token 32w + j."""

    rows: torch.Tensor  # [r] int64: rows of the batch, on the logits' device
    bits: torch.Tensor  # [r, ceil(vocab / 32)] int32, on the logits' device


@dataclass
class SamplerOutput:
    token_ids: torch.Tensor  # [rows] int64
    # Present when any row asked for logprobs; all from the raw (unpenalised) distribution.
    logprobs: torch.Tensor | None  # [rows] float32, of the chosen token
    top_ids: torch.Tensor | None  # [rows, k] int64, k = the largest `logprobs` asked for
    top_logprobs: torch.Tensor | None  # [rows, k] float32


def make_generator(seed: int, index: int, device: torch.device | str) -> torch.Generator:
    """The generator of completion `index` of a request with `seed`: completions of one
    request differ, and the same (seed, index) always gives the same stream."""
    digest = hashlib.blake2b(f"{seed}/{index}".encode(), digest_size=8).digest()
    generator = torch.Generator(device=device)
    generator.manual_seed(int.from_bytes(digest, "little"))
    return generator


class Sampler:
    def __init__(self, generator: torch.Generator | None = None) -> None:
        self.generator = generator  # for unseeded rows; None = torch's default generator

    def __call__(
        self,
        logits: torch.Tensor,
        rows: list[SamplingRow],
        unread_ids: torch.Tensor | None = None,
        mask: TokenMask | None = None,
    ) -> SamplerOutput:
        """unread_ids: the previous step's sampled ids, on the device (see unread_row)."""
        if logits.dim() != 2 or logits.shape[0] != len(rows):
            raise ValueError(
                f"logits must be [num_rows={len(rows)}, vocab], got {tuple(logits.shape)}"
            )
        logits = logits.float()
        params = [row.params for row in rows]
        want_logprobs = any(p.needs_logprob for p in params)
        raw_logprobs = torch.log_softmax(logits, dim=-1) if want_logprobs else None

        logits = apply_logit_bias(logits, params)
        logits = apply_penalties(logits, rows, unread_ids)
        if mask is not None:
            logits = apply_token_mask(logits, mask)
        greedy_ids = argmax(logits)
        if all(p.greedy for p in params):
            token_ids = greedy_ids
        else:
            probs = filtered_probs(logits, params)
            sampled = self._exponential_race(probs, rows)
            greedy = _column([p.greedy for p in params], logits).squeeze(1)
            token_ids = torch.where(greedy, greedy_ids, sampled)

        if raw_logprobs is None:
            return SamplerOutput(token_ids, None, None, None)
        k = max(p.logprobs or 0 for p in params)
        top_logprobs, top_ids = raw_logprobs.topk(k, dim=-1)
        chosen = raw_logprobs.gather(1, token_ids.unsqueeze(1)).squeeze(1)
        return SamplerOutput(token_ids, chosen, top_ids, top_logprobs)

    def _exponential_race(self, probs: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        """argmax(p / E) with E ~ Exp(1) per token picks token i with probability p_i."""
        # Every row gets shared noise first (one kernel); seeded rows then overwrite theirs.
        noise = torch.empty_like(probs).exponential_(generator=self.generator)
        for i, row in enumerate(rows):
            if row.generator is not None:
                noise[i] = torch.empty_like(probs[i]).exponential_(generator=row.generator)
        # A zero draw would turn a filtered token's 0/0 into NaN, which argmax would pick.
        noise.clamp_(min=torch.finfo(noise.dtype).tiny)
        return argmax(probs / noise)


def argmax(x: torch.Tensor) -> torch.Tensor:
    """Each row's largest entry (the first of ties); on CUDA a parallel two-pass kernel."""
    if x.is_cuda:
        from pagoda_worker.kernels.argmax import argmax_rows  # Triton: CUDA only

        return argmax_rows(x)
    return x.argmax(dim=-1)


def token_logprobs(
    logits: torch.Tensor, token_ids: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row's logprob of its given token, and its k best tokens (ids, logprobs), from the
    raw distribution (for prompt tokens: nothing was sampled there)."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    chosen = logprobs.gather(1, token_ids.unsqueeze(1)).squeeze(1)
    top_logprobs, top_ids = logprobs.topk(k, dim=-1)
    return chosen, top_ids, top_logprobs


def apply_token_mask(logits: torch.Tensor, mask: TokenMask) -> torch.Tensor:
    """Tokens a row's grammar does not allow get -inf."""
    shifts = torch.arange(32, dtype=torch.int32, device=logits.device)
    allowed = ((mask.bits.unsqueeze(-1) >> shifts) & 1).flatten(1)[:, : logits.shape[1]]
    rows = logits[mask.rows].masked_fill(allowed == 0, float("-inf"))
    return logits.index_put((mask.rows,), rows)


def apply_logit_bias(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    """Adds each row's biases to their tokens' logits: only the listed entries travel to the
    device (no vocabulary-sized tensor is built on the host)."""
    rows = [row for row, p in enumerate(params) for _ in p.logit_bias]
    if not rows:
        return logits
    token_ids = [token for p in params for token in p.logit_bias]
    biases = [bias for p in params for bias in p.logit_bias.values()]
    index = _to_device([rows, token_ids], torch.int64, logits)
    values = _to_device(biases, logits.dtype, logits)
    return logits.index_put((index[0], index[1]), values, accumulate=True)


def apply_penalties(
    logits: torch.Tensor, rows: list[SamplingRow], unread_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """Repetition penalty (HF: over prompt and output tokens) then OpenAI's frequency and
    presence penalties (over output tokens only)."""
    params = [row.params for row in rows]
    repeats = [p.repetition_penalty != 1.0 for p in params]
    if any(repeats):
        histories = [
            r.prompt_token_ids + r.output_token_ids if on else []
            for r, on in zip(rows, repeats, strict=True)
        ]
        seen = token_counts(histories, logits, _unread_rows(rows, repeats), unread_ids) > 0
        penalty = _column([p.repetition_penalty for p in params], logits)
        penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
        logits = torch.where(seen, penalised, logits)
    counted = [bool(p.frequency_penalty or p.presence_penalty) for p in params]
    if any(counted):
        outputs = [r.output_token_ids if on else [] for r, on in zip(rows, counted, strict=True)]
        counts = token_counts(outputs, logits, _unread_rows(rows, counted), unread_ids)
        frequency = _column([p.frequency_penalty for p in params], logits)
        presence = _column([p.presence_penalty for p in params], logits)
        logits = logits - frequency * counts - presence * (counts > 0).float()
    return logits


def filtered_probs(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    """Temperature, top-k, top-p and min-p; filtered tokens get probability 0."""
    temperature = _column([p.temperature if not p.greedy else 1.0 for p in params], logits)
    logits = logits / temperature
    if any(p.top_k for p in params) or any(p.top_p < 1.0 for p in params):
        logits = apply_top_k_top_p(logits, params)
    probs = torch.softmax(logits, dim=-1)
    if any(p.min_p for p in params):
        min_p = _column([p.min_p for p in params], logits)
        probs = probs.masked_fill(probs < min_p * probs.amax(dim=-1, keepdim=True), 0.0)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


def apply_top_k_top_p(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    """Keep the k best tokens (ties with the k-th kept, like HF), then the smallest set of
    best tokens whose probability reaches top_p; the rest get -inf."""
    vocab = logits.shape[1]
    ordered, order = logits.sort(dim=-1, descending=True)
    k = _to_device([[min(p.top_k or vocab, vocab) - 1] for p in params], torch.int64, logits)
    kth_best = ordered.gather(1, k)
    ordered = ordered.masked_fill(ordered < kth_best, float("-inf"))

    probs = torch.softmax(ordered, dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # of the strictly better tokens
    top_p = _column([p.top_p for p in params], logits)
    beyond_p = (mass_before >= top_p) & (top_p < 1.0)  # top_p == 1 must not cut rounding dust
    beyond_p[:, 0] = False  # the best token always stays, also when top_p rounds to 0 in float32
    ordered = ordered.masked_fill(beyond_p, float("-inf"))
    return torch.empty_like(logits).scatter_(1, order, ordered)


def token_counts(
    id_lists: list[list[int]],
    like: torch.Tensor,
    unread_rows: list[int | None] | None = None,
    unread_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """[rows, vocab] float32: how often each token occurs in each row's list, plus, for a row
    with an unread row, the token at that index of unread_ids (still on the device)."""
    rows, vocab = like.shape
    width = max(len(ids) for ids in id_lists)
    padded = _to_device([ids + [vocab] * (width - len(ids)) for ids in id_lists], torch.int64, like)
    counts = torch.zeros((rows, vocab + 1), device=like.device)  # column `vocab` takes the padding
    counts.scatter_add_(1, padded, torch.ones_like(padded, dtype=counts.dtype))
    sources = {row: source for row, source in enumerate(unread_rows or []) if source is not None}
    if sources:
        assert unread_ids is not None, "a row with an unread token reads it from unread_ids"
        index = _to_device([list(sources), list(sources.values())], torch.int64, like)
        ones = torch.ones(len(sources), device=like.device)
        counts.index_put_((index[0], unread_ids[index[1]]), ones, accumulate=True)
    return counts[:, :vocab]


def _unread_rows(rows: list[SamplingRow], wanted: list[bool]) -> list[int | None]:
    return [r.unread_row if on else None for r, on in zip(rows, wanted, strict=True)]


def _column(values: list[float] | list[bool], like: torch.Tensor) -> torch.Tensor:
    """A per-row value as a [rows, 1] tensor on `like`'s device."""
    return _to_device([[v] for v in values], None, like)


def _to_device(data: list, dtype: torch.dtype | None, like: torch.Tensor) -> torch.Tensor:
    """Host lists to `like`'s device; through pinned memory on CUDA so the host need not wait."""
    if like.device.type != "cuda":
        return torch.tensor(data, dtype=dtype)
    return torch.tensor(data, dtype=dtype, pin_memory=True).to(like.device, non_blocking=True)
