"""Unread tokens: async scheduling's one idea, and the step that holds them.

With async scheduling the engine launches step N+1 before it reads step N's tokens. A token
sampled on the device whose id the host has not read yet is an *unread token*: step N+1's inputs
take it on the device, copies to the host land in pinned memory while the device works, and the
host reads them while step N+1 runs, so its bookkeeping overlaps the device's work instead of
leaving the device idle between steps. Where the idea lives:

- here: `UnreadStep`, a sampled step whose token ids are still on the device (`token_ids`,
  with each sequence's row in `rows`), and `SampledOnHost`, what reading it gives;
- sequence.py: `UNREAD` stands in `Sequence.token_ids` for each of the `num_unread` trailing
  unread tokens (`add_unread`, `read_token`, `drop_unread`; `num_read_tokens` and
  `output_token_ids` count only read ones; `has_last_token` counts them, so the scheduler
  launches nothing past max_tokens); block_manager.py's `commit` caches a block only once its
  ids are read;
- core.py: `EngineCore.step` launches (`Launched`), samples (`_sample` -> `UnreadStep`, kept in
  `_unread`) and reads (`_read`, timed as the "resolve" lap of loop_timing.py);
  `has_unfinished_requests` stays true while a step is unread, so core_loop.py steps again;
- model_runner.py: `prepare(scheduled, unread_rows)` finds the input rows holding unread tokens
  (`StepInputs.unread_inputs`, `unread_sources`) and `execute(inputs, unread_ids)` fills them
  in from the previous step's sampled ids on the device;
- sampler.py: `SamplingRow.unread_row` and the sampler's `unread_ids` let the penalties count a
  row's unread last token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pagoda_worker.engine.sampler import SamplerOutput
from pagoda_worker.engine.scheduler import ScheduledSeq
from pagoda_worker.engine.sequence import Sequence


@dataclass
class SampledOnHost:
    """A step's SamplerOutput as host lists."""

    token_ids: list[int]
    logprobs: list[float] | None
    top_ids: list[list[int]] | None
    top_logprobs: list[list[float]] | None


class UnreadStep:
    """A sampled step whose tokens the host has not read yet."""

    def __init__(
        self, scheduled: list[ScheduledSeq], seqs: list[Sequence], result: SamplerOutput | None
    ) -> None:
        self.scheduled = scheduled
        self.seqs = seqs  # the sequences that sampled, in the order of the result's rows
        self.rows = {seq: row for row, seq in enumerate(seqs)}
        self.token_ids: torch.Tensor | None = None  # on the device: the next step reads it
        self._host: list[torch.Tensor | None] = []
        self._copied: torch.cuda.Event | None = None
        if result is not None:
            self.token_ids = result.token_ids
            parts = (result.token_ids, result.logprobs, result.top_ids, result.top_logprobs)
            self._host = [_to_host(part) for part in parts]
            if result.token_ids.is_cuda:
                self._copied = torch.cuda.Event()
                self._copied.record()
        for seq in seqs:
            if not seq.is_finished:  # ended by the step before, read while this one ran
                seq.add_unread()

    def wait(self) -> SampledOnHost:
        """Block until the sampled tokens are on the host."""
        if self._copied is not None:
            self._copied.synchronize()
        if not self._host:
            return SampledOnHost([], None, None, None)
        token_ids, *others = (part.tolist() if part is not None else None for part in self._host)
        assert token_ids is not None  # a sampled step always has its token ids
        return SampledOnHost(token_ids, *others)


def _to_host(tensor: torch.Tensor | None) -> torch.Tensor | None:
    if tensor is None or not tensor.is_cuda:
        return tensor
    pinned = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    return pinned.copy_(tensor, non_blocking=True)
