"""Continuous batching: each step, decide how many tokens every sequence gets.

One token budget per step covers decodes and prefill chunks alike (a prefill is just a
sequence with many uncomputed tokens). Running sequences go first, in arrival order; waiting
ones are admitted FCFS while budget, sequence slots and KV blocks last. When blocks run out, the
most recently arrived running sequence is preempted: its blocks are freed and it goes back to the
front of the queue to be recomputed later, so the oldest work always progresses and none starves.

Removing a waiting sequence (an abort) costs O(1): it stays in the queue, marked finished, and is
dropped when it reaches the front, or when the dead outnumber the live and the queue is rebuilt
(amortised O(1) per removal). Aborting a request of 100k waiting sequences is linear, not
quadratic.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from pagoda_worker.engine.block_manager import BlockManager
from pagoda_worker.engine.sequence import Sequence, SequenceStatus


@dataclass
class ScheduledSeq:
    seq: Sequence
    num_new_tokens: int

    @property
    def samples(self) -> bool:
        """Whether this step computes the sequence's last token, so a new one is sampled."""
        return self.seq.num_computed_tokens + self.num_new_tokens == self.seq.num_tokens


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledSeq]  # decodes (one new token) first, then prefill chunks

    @property
    def num_tokens(self) -> int:
        return sum(s.num_new_tokens for s in self.scheduled)


class Scheduler:
    def __init__(self, block_manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int):
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0
        self._num_removed_waiting = 0  # finished sequences still in `waiting`

    @property
    def num_waiting(self) -> int:
        return len(self.waiting) - self._num_removed_waiting

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def remove(self, seq: Sequence) -> None:
        """Take a sequence out (finished or aborted) and free its blocks."""
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)  # at most max_num_seqs long
        elif seq.status is SequenceStatus.WAITING:
            self._num_removed_waiting += 1
        self.block_manager.free_seq(seq)
        seq.status = SequenceStatus.FINISHED
        if self._num_removed_waiting > max(len(self.waiting) // 2, 64):
            self.waiting = deque(s for s in self.waiting if not s.is_finished)
            self._num_removed_waiting = 0

    def schedule(self) -> SchedulerOutput:
        budget = self.max_num_batched_tokens
        scheduled: list[ScheduledSeq] = []
        preempted = 0

        # Running sequences, oldest first; preempt from the back when blocks run short.
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            if seq.has_last_token:  # its final token is unread: it ends once that is read
                i += 1
                continue
            num_new = min(seq.num_uncomputed_tokens, budget)
            while not self.block_manager.can_append(seq, num_new):
                victim = self.running[-1]
                self._preempt(victim)
                preempted += 1
                if victim is seq:
                    break
            else:
                self.block_manager.append_slots(seq, num_new)
                scheduled.append(ScheduledSeq(seq, num_new))
                budget -= num_new
                i += 1

        # Admit waiting sequences in order, unless this step had to preempt.
        if not preempted:
            budget = self._admit(scheduled, budget)

        scheduled.sort(key=lambda s: s.num_new_tokens != 1)
        return SchedulerOutput(scheduled)

    def _admit(self, scheduled: list[ScheduledSeq], budget: int) -> int:
        deferred: list[Sequence] = []
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            if seq.is_finished:  # removed while waiting
                self.waiting.popleft()
                self._num_removed_waiting -= 1
                continue
            if seq.waits_for_sibling():
                deferred.append(self.waiting.popleft())
                continue
            hits = self.block_manager.cached_prefix(seq)
            num_new = min(seq.num_tokens - len(hits) * self.block_manager.block_size, budget)
            if not self.block_manager.can_allocate(seq, num_new, hits):
                break
            self.waiting.popleft()
            self.block_manager.allocate(seq, num_new, hits)
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            scheduled.append(ScheduledSeq(seq, num_new))
            budget -= num_new
        self.waiting.extendleft(reversed(deferred))
        return budget

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.block_manager.free_seq(seq)
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1
