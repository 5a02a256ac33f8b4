"""A launched step whose sampled tokens the host has not read yet.

With async scheduling the engine launches step N+1 before it reads step N's tokens: the sampled
ids stay on the device, where step N+1's inputs take them, and copies to the host land in pinned
memory while the device works. The host reads them (resolve) while step N+1 runs, so its
bookkeeping overlaps the device's work instead of leaving the device idle between steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from worker.engine.sampler import SamplerOutput
from worker.engine.scheduler import ScheduledSeq
from worker.engine.sequence import Sequence


@dataclass
class SampledOnHost:
    """A step's SamplerOutput as host lists."""

    token_ids: list[int]
    logprobs: list[float] | None
    top_ids: list[list[int]] | None
    top_logprobs: list[list[float]] | None


class InFlightStep:
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
                seq.add_placeholder()

    def wait(self) -> SampledOnHost:
        """Block until the sampled tokens are on the host."""
        if self._copied is not None:
            self._copied.synchronize()
        if not self._host:
            return SampledOnHost([], None, None, None)
        return SampledOnHost(*(part.tolist() if part is not None else None for part in self._host))


def _to_host(tensor: torch.Tensor | None) -> torch.Tensor | None:
    if tensor is None or not tensor.is_cuda:
        return tensor
    pinned = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    return pinned.copy_(tensor, non_blocking=True)
