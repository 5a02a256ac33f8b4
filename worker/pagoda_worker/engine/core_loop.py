"""The engine core's loop: apply the front end's commands, step, report; over and over.

It runs in the engine process (core_process.py) and is the only code there that touches the
core. Each pass takes what the channel has (never waiting while there is work), applies queued
commands one request at a time for at most `command_budget_s` (a burst of huge adds or aborts,
even a single one, is spread over passes instead of stalling the steps), runs one step and sends
one Report: the step's outputs for every request at once, the stats, and the adds it took. An
idle pass waits up to `idle_wait_s` for a command and reports anyway, so the front end sees a
heartbeat several times a second whatever the traffic.
"""

from __future__ import annotations

import gc
import logging
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from pagoda_worker.engine.errors import InvalidRequest
from pagoda_worker.engine.loop_timing import GcClock, PassMeter, PassTiming
from pagoda_worker.engine.messages import (
    AbortRequests,
    AddRequests,
    CoreOutput,
    Failed,
    Faults,
    FinishSeqs,
    FromCore,
    Rejection,
    Report,
    Shutdown,
    ToCore,
)

log = logging.getLogger("pagoda.engine")


@dataclass
class CoreLoopOptions:
    command_budget_s: float = 0.005  # adds and aborts applied per pass, at most
    idle_wait_s: float = 0.05  # how long an idle pass waits for a command: the heartbeat


class Channel(Protocol):
    def receive(self, wait_s: float) -> list[ToCore]:
        """What has arrived; waits up to wait_s for something when nothing has."""

    def send(self, message: FromCore) -> None: ...


@dataclass
class _Answers:
    """What one pass tells the front end about its adds."""

    taken: dict[int, int] = field(default_factory=dict)  # add id -> sequences in the engine now
    added: list[int] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


class CoreLoop:
    def __init__(self, core, channel: Channel, options: CoreLoopOptions | None = None) -> None:
        self.core = core
        self.channel = channel
        self.options = options or CoreLoopOptions()
        self.faults = Faults()
        self.passes = PassMeter(GcClock())  # the slowest pass so far, and why
        self._queue: deque[ToCore] = deque()  # received, not applied yet
        self._work: Iterator | None = None  # the command being applied, in part so far
        self._answers = _Answers()  # this pass's: a command spread over passes answers in each
        self._reported_slowest: PassTiming | None = None
        self._stopping = False

    def run(self) -> None:
        # The model's objects live as long as the process: keep them out of the collector's
        # full passes, which would otherwise scan them all while a big request is added.
        gc.collect()
        gc.freeze()
        self.passes.gc_clock.install()
        try:
            while not self._stopping:
                self.run_pass()
        except SystemExit:  # the front end is gone: nobody to tell
            raise
        except BaseException as e:  # the engine is in an unknown state: stop serving
            log.exception("engine loop failed")
            self.channel.send(Failed(f"engine failed: {e!r}"))
            raise
        finally:
            self.passes.gc_clock.uninstall()

    def run_pass(self) -> None:
        self.core.check_ranks()  # a lost rank fails the engine now, not at the next request
        wedged = self.faults.wedged
        busy = not wedged and (self._queue or self._work or self.core.has_unfinished_requests())
        self._receive(0.0 if busy else self.options.idle_wait_s)
        laps = self.passes.start()  # the pass's work, without the idle wait
        self._answers, outputs = _Answers(), []
        if not self.faults.wedged:
            if self._queue or self._work:
                self._apply_commands(time.monotonic() + self.options.command_budget_s)
                laps.lap("commands")
            if self.core.has_unfinished_requests():  # aborted ones too: unread tokens
                self._misbehave_before_step()
                outputs = self.core.step(laps)
        self._report(outputs)
        laps.lap("hand-over")
        self.passes.finish()

    # ----- commands -----

    def _receive(self, wait_s: float) -> None:
        for command in self.channel.receive(wait_s):
            if isinstance(command, Faults):
                self.faults = command
                log.warning("test faults: %s", command)
            elif isinstance(command, Shutdown):
                self._stopping = True
            else:
                self._queue.append(command)

    def _apply_commands(self, deadline: float) -> None:
        """One request at a time until none is left or the deadline passes; a command cut off
        midway resumes first in the next pass (a step runs in between)."""
        while self._work or self._queue:  # at least one request per pass, whatever the budget
            work = self._work or self._units(self._queue.popleft())
            self._work = work if next(work, None) is not None else None
            if time.monotonic() >= deadline:
                return

    def _units(self, command: ToCore) -> Iterator[bool]:
        """A command's work, one request (at most n sequences) at a time. It yields only
        between two requests, where the pass may end: a command whose last request is applied
        is done in that same pass."""
        if isinstance(command, AbortRequests):
            for i, request_id in enumerate(command.request_ids):
                if i:
                    yield True
                self.core.abort_request(request_id)
        elif isinstance(command, FinishSeqs):
            for request_id, index in command.seqs:
                self.core.finish_seq(request_id, index)
        elif isinstance(command, AddRequests):
            yield from self._add(command)

    def _add(self, add: AddRequests) -> Iterator[bool]:
        added: list[str] = []
        for request_id, prompt in zip(add.request_ids, add.prompts, strict=True):
            if added:
                yield True
            answers = self._answers  # read after each yield: the pass may have changed
            try:
                self.core.add_request(prompt, add.params, request_id)
            except InvalidRequest as e:  # the engine's own checks: nothing of the add is kept
                for done in added:
                    self.core.abort_request(done)
                answers.taken.pop(add.add_id, None)
                answers.rejected.append(Rejection(add.add_id, e.field, e.reason))
                return
            added.append(request_id)
            answers.taken[add.add_id] = answers.taken.get(add.add_id, 0) + add.params.num_seqs
        self._answers.added.append(add.add_id)

    # ----- reports -----

    def _report(self, outputs: list[CoreOutput]) -> None:
        answers = self._answers
        slowest = self.passes.slowest
        new_slowest = slowest is not self._reported_slowest
        self._reported_slowest = slowest
        self.channel.send(
            Report(
                stats=self.core.stats(),
                outputs=outputs,
                taken=list(answers.taken.items()),
                added=answers.added,
                rejected=answers.rejected,
                slowest_pass=slowest if new_slowest else None,
                most_pass_cpu_s=self.passes.most_cpu_s,
            )
        )

    # ----- test faults -----

    def _misbehave_before_step(self) -> None:
        faults = self.faults
        if faults.hang_s:
            time.sleep(faults.hang_s)
            faults.hang_s = 0.0
        if faults.step_delay_s:
            time.sleep(faults.step_delay_s)
        if faults.fail_after_steps is not None:
            if faults.fail_after_steps == 0:
                raise RuntimeError(faults.fail_message)
            faults.fail_after_steps -= 1
