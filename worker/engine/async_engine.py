"""AsyncLLMEngine: the engine on a thread of its own, streams of outputs for asyncio.

The engine thread is the only one that touches the model: it applies queued commands
(add, abort), runs `step()` and hands the outputs to the event loop with
`call_soon_threadsafe`. The event loop only ever enqueues commands and reads queues, so
it never waits on the model. Each loop iteration stamps a heartbeat, also when idle, so a
wedged engine or device shows up as a stale heartbeat.

Admission counts sequences (prompts x n), not API calls: one call may bring thousands. A call
that could never fit is refused as bad input; one that does not fit now, as a full queue. Each
loop pass applies commands, one request at a time, for at most `command_budget_s` before it
steps again, so a burst of huge adds or aborts (even a single one) is spread over passes instead
of stalling the loop.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from itertools import count
from typing import Protocol

from worker.engine.loop_timing import GcClock, PassMeter
from worker.engine.outputs import RequestOutput
from worker.engine.sampling_params import SamplingParams

log = logging.getLogger("pagoda.engine")


class EngineDeadError(RuntimeError):
    """The engine loop failed or stopped; requests can no longer be served."""


class QueueFullError(RuntimeError):
    """The waiting queue cannot take the request now; the caller should retry later."""

    def __init__(self, num_waiting: int, num_new: int, retry_after_s: int) -> None:
        super().__init__(
            f"{num_waiting} sequences are already waiting and this request brings {num_new}; "
            "retry later"
        )
        self.retry_after_s = retry_after_s


class OutputObserver(Protocol):
    def on_output(self, output: RequestOutput) -> None: ...


@dataclass
class AsyncEngineOptions:
    max_waiting_seqs: int = 4096  # sequences (prompts x n) waiting; beyond: refused
    max_seqs_per_request: int = 2048  # prompts x n of one call; beyond: a bad request
    command_budget_s: float = 0.005  # adds and aborts applied per loop pass, at most
    request_timeout_s: float | None = 600.0  # a request running longer is aborted
    idle_wait_s: float = 0.05  # how long an idle loop sleeps between heartbeats
    heartbeat_timeout_s: float = 30.0  # older heartbeat: unhealthy
    canary_interval_s: float = 10.0
    canary_timeout_s: float = 30.0
    canary_max_age_s: float = 35.0  # no token generated for longer: not ready
    warmup_timeout_s: float = 600.0
    retry_after_s: int = 1


class RequestGroup:
    """The requests of one API call (one per prompt), streamed together in arrival order."""

    def __init__(self, request_ids: list[str], abort: Callable[[RequestGroup], None]) -> None:
        self.request_ids = request_ids
        self.index = {rid: i for i, rid in enumerate(request_ids)}
        self.unfinished = set(request_ids)
        self.cut_because: str | None = None  # why the server ended it early: CUT_* below
        self._abort = abort
        self._queue: asyncio.Queue[RequestOutput | BaseException] = asyncio.Queue()

    @property
    def finished(self) -> bool:
        return not self.unfinished

    @property
    def timed_out(self) -> bool:
        return self.cut_because == CUT_TIMEOUT

    def cut(self, reason: str) -> None:
        """Abort on the server's own initiative; the caller tells its client why."""
        if self.unfinished:
            self.cut_because = reason
            self.abort()

    def abort(self) -> None:
        """Stop generating now; the engine frees the KV blocks of the unfinished requests."""
        if self.unfinished:
            self._abort(self)

    def put(self, output: RequestOutput) -> None:
        if output.finished:
            self.unfinished.discard(output.request_id)
        self._queue.put_nowait(output)

    def fail(self, error: BaseException) -> None:
        self.unfinished.clear()
        self._queue.put_nowait(error)

    async def __aiter__(self) -> AsyncIterator[tuple[int, RequestOutput]]:
        """(prompt index, output) until every request has finished; engine errors raise."""
        while not (self.finished and self._queue.empty()):
            item = await self._queue.get()
            if isinstance(item, BaseException):
                raise item
            yield self.index[item.request_id], item


@dataclass(eq=False)
class _Add:
    group: RequestGroup
    prompts: list[list[int]]
    params: SamplingParams
    arrival_time: float  # wall clock, as the engine's RequestMetrics
    done: asyncio.Future = field(repr=False)
    pending_seqs: int = 0  # event loop's: sequences the engine's stats do not count yet


@dataclass
class _Abort:
    request_ids: list[str]


CUT_TIMEOUT = "timeout"  # the request ran past its timeout
CUT_SHUTDOWN = "shutdown"  # the server stopped serving it (drain deadline, second signal)

_WAKE_UP = object()  # lets an idle engine thread see that it should stop
_DONE = object()  # a command's work is all applied


class AsyncLLMEngine:
    def __init__(
        self,
        engine,
        options: AsyncEngineOptions | None = None,
        observer: OutputObserver | None = None,
    ) -> None:
        self.engine = engine
        self.options = options or AsyncEngineOptions()
        self._observer = observer
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._work: Iterator[_Add | tuple | None] | None = None  # a command applied in part so far
        self._groups: dict[str, RequestGroup] = {}  # unfinished request id -> its group
        self._internal: set[RequestGroup] = set()  # canaries: kept out of the metrics
        self._timers: dict[RequestGroup, asyncio.TimerHandle] = {}
        self._ids = count()
        self._pending_seqs = 0  # sequences enqueued but not yet in the engine's waiting queue
        self._add_futures: set[asyncio.Future] = set()  # adds the engine has yet to answer
        self._heartbeat = time.monotonic()
        self._error: BaseException | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._canary_task: asyncio.Task | None = None
        self._canary_prompt = engine.tokenizer.encode("ping")
        self.stats = engine.stats()  # latest snapshot, written by the engine thread
        self.passes = PassMeter(GcClock())  # the slowest loop pass so far, and why
        self.warmed_up = False
        # TEST ONLY (worker/server/faults.py). wedged: the loop keeps its heartbeat but takes
        # no request and runs no step, as an engine that stopped producing tokens while the
        # process lives. step_delay_s: each step waits this long first, as a much bigger model.
        self.wedged = False
        self.step_delay_s = 0.0
        # Any token out of the real engine proves it works: a canary's, or real traffic's.
        self.last_generation_ok: float | None = None

    # ----- lifecycle (event loop) -----

    async def start(self) -> None:
        """Start the engine thread, warm up with a real generation, then canary periodically."""
        self._loop = asyncio.get_running_loop()
        # The model's objects live as long as the process: keep them out of the collector's
        # full passes, which would otherwise scan them all while a big request is added.
        gc.collect()
        gc.freeze()
        self.passes.gc_clock.install()
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._thread.start()
        await self._canary(max_tokens=8, timeout_s=self.options.warmup_timeout_s)
        if self.last_generation_ok is None:
            raise EngineDeadError(f"warm-up generation failed: {self._error or 'timed out'}")
        self.warmed_up = True
        self._canary_task = asyncio.create_task(self._canary_forever(), name="canary")

    async def stop(self) -> None:
        if self._canary_task:
            self._canary_task.cancel()
        self._stopping = True
        self._commands.put(_WAKE_UP)
        if self._thread:
            await asyncio.to_thread(self._thread.join, 5.0)
        self.passes.gc_clock.uninstall()
        self._fail_all(EngineDeadError("the engine was stopped"))

    # ----- health -----

    def heartbeat_age(self) -> float:
        return time.monotonic() - self._heartbeat

    @property
    def error(self) -> BaseException | None:
        return self._error

    def is_healthy(self) -> bool:
        alive = self._thread is not None and self._thread.is_alive()
        fresh = self.heartbeat_age() < self.options.heartbeat_timeout_s
        return alive and fresh and self._error is None

    def generation_age(self) -> float | None:
        """Seconds since the engine last produced a token (canary or traffic)."""
        if self.last_generation_ok is None:
            return None
        return time.monotonic() - self.last_generation_ok

    def not_ready_reasons(self) -> list[str]:
        reasons = []
        if not self.is_healthy():
            reasons.append("engine loop is not healthy")
        if not self.warmed_up:
            reasons.append("warming up")
        age = self.generation_age()
        if age is None or age > self.options.canary_max_age_s:
            reasons.append("no token generated recently (canary or traffic)")
        return reasons

    # ----- requests (event loop) -----

    async def generate(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        *,
        timeout_s: float | None = None,
        internal: bool = False,
    ) -> RequestGroup:
        """Queue one request per prompt; returns once the engine has taken them.

        Raises EngineDeadError, QueueFullError, or ValueError (too many sequences, or the
        engine's own checks: a bad prompt).
        """
        if self._error is not None or self._stopping:
            raise EngineDeadError(f"the engine is not running: {self._error or 'stopped'}")
        num_seqs = len(prompts) * params.num_seqs
        if not internal:
            self._admit(num_seqs, len(prompts), params)
        batch = next(self._ids)
        group = RequestGroup([f"req-{batch}-{i}" for i in range(len(prompts))], self._abort)
        for rid in group.request_ids:
            self._groups[rid] = group
        if internal:
            self._internal.add(group)
        done = self._loop.create_future()
        add = _Add(group, prompts, params, time.time(), done, pending_seqs=num_seqs)
        self._pending_seqs += num_seqs
        self._add_futures.add(done)
        self._commands.put(add)
        try:
            await done
        except asyncio.CancelledError:
            group.abort()  # the caller left before the engine took the requests
            raise
        finally:
            self._taken(add, add.pending_seqs)  # all of them now: in the stats, or never
            self._add_futures.discard(done)
        timeout_s = self.options.request_timeout_s if timeout_s is None else timeout_s
        if timeout_s and not group.finished:
            self._timers[group] = self._loop.call_later(timeout_s, self._expire, group)
        return group

    def _admit(self, num_seqs: int, num_prompts: int, params: SamplingParams) -> None:
        """Refuse, before any work, a call that can never fit or does not fit now."""
        limit = min(self.options.max_seqs_per_request, self.options.max_waiting_seqs)
        if num_seqs > limit:
            field = "best_of" if params.selects_best else "n"
            raise ValueError(
                f"{field}: {num_prompts} prompt(s) x {field}={params.num_seqs} = {num_seqs} "
                f"sequences; this server takes at most {limit} per request"
            )
        num_waiting = self.stats.num_waiting + self._pending_seqs
        if num_waiting + num_seqs > self.options.max_waiting_seqs:
            raise QueueFullError(num_waiting, num_seqs, self.options.retry_after_s)

    def _taken(self, add: _Add, num_seqs: int) -> None:
        """The engine's stats count num_seqs more of the add's sequences: stop counting them
        as pending. An add applied over several passes is never counted twice."""
        num_seqs = min(num_seqs, add.pending_seqs)
        add.pending_seqs -= num_seqs
        self._pending_seqs -= num_seqs

    def _abort(self, group: RequestGroup) -> None:
        self._commands.put(_Abort(sorted(group.unfinished)))

    def _expire(self, group: RequestGroup) -> None:
        self._timers.pop(group, None)
        log.warning("request %s timed out; aborting", group.request_ids[0])
        group.cut(CUT_TIMEOUT)

    def cut_all(self) -> int:
        """Abort every client request (canaries aside) as CUT_SHUTDOWN; returns how many
        API calls were cut."""
        groups = {*self._groups.values()} - self._internal
        for group in groups:
            group.cut(CUT_SHUTDOWN)
        return len(groups)

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        if any(c.new_token_ids for output in outputs for c in output.outputs):
            self.last_generation_ok = time.monotonic()
        for output in outputs:
            group = self._groups.get(output.request_id)
            if group is None:
                continue
            if output.finished:
                del self._groups[output.request_id]
            if self._observer and group not in self._internal:
                self._observer.on_output(output)
            group.put(output)
            if group.finished:
                self._forget(group)

    def _forget(self, group: RequestGroup) -> None:
        self._internal.discard(group)
        timer = self._timers.pop(group, None)
        if timer:
            timer.cancel()

    def _drop(self, group: RequestGroup) -> None:
        """Stop routing outputs to the group: the engine rejected or lost its requests."""
        for rid in group.request_ids:
            self._groups.pop(rid, None)
        self._forget(group)

    def _fail_group(self, group: RequestGroup, error: BaseException) -> None:
        self._drop(group)
        group.fail(error)

    def _fail_all(self, error: BaseException) -> None:
        """Fail every request, including adds the engine thread will never answer."""
        for done in self._add_futures:
            if not done.done():
                done.set_exception(error)
        for group in {*self._groups.values()}:
            self._fail_group(group, error)

    # ----- canary (event loop) -----

    async def _canary(self, max_tokens: int, timeout_s: float) -> None:
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
        try:
            async with asyncio.timeout(timeout_s):
                group = await self.generate([self._canary_prompt], params, internal=True)
                try:
                    async for _ in group:
                        pass
                finally:  # a stuck canary must not keep its batch slot and KV blocks
                    group.abort()
        except (TimeoutError, EngineDeadError, ValueError) as e:
            log.error("canary generation failed: %r", e)

    async def _canary_forever(self) -> None:
        """Under traffic, real tokens keep readiness fresh; an idle engine gets a canary."""
        while self._error is None:
            await asyncio.sleep(self.options.canary_interval_s)
            age = self.generation_age()
            if age is None or age >= self.options.canary_interval_s:
                await self._canary(max_tokens=1, timeout_s=self.options.canary_timeout_s)

    # ----- the engine thread -----

    def _run(self) -> None:
        try:
            while not self._stopping:
                self._heartbeat = time.monotonic()
                if self.wedged:
                    time.sleep(self.options.idle_wait_s)
                    continue
                idle = not self.engine.has_unfinished_requests() and self._work is None
                command = None
                if self._work is None:
                    command = self._next_command(wait_s=self.options.idle_wait_s if idle else 0)
                laps = self.passes.start()  # the pass's work, without the idle wait
                if command is not None or self._work is not None:
                    self._apply_commands(command, time.monotonic() + self.options.command_budget_s)
                    laps.lap("commands")
                if self.engine.has_unfinished_requests():  # aborted ones too: they report
                    if self.step_delay_s:
                        time.sleep(self.step_delay_s)
                    outputs = self.engine.step(laps)
                    self.stats = self.engine.stats()
                    if outputs:
                        self._loop.call_soon_threadsafe(self._deliver, outputs)
                    laps.lap("hand-over")
                self.passes.finish()
        except BaseException as e:  # the engine is in an unknown state: stop serving
            log.exception("engine loop failed")
            self._error = e
            dead = EngineDeadError(f"engine failed: {e!r}")
            self._loop.call_soon_threadsafe(self._fail_all, dead)

    def _next_command(self, wait_s: float):
        try:
            return self._commands.get(timeout=wait_s) if wait_s else self._commands.get_nowait()
        except queue.Empty:
            return None

    def _apply_commands(self, command, deadline: float) -> None:
        """Apply commands one request at a time until none is left or the deadline passes; a
        command cut off midway resumes first in the next pass (a step runs in between)."""
        answers = []  # for the event loop, once the stats show the added requests
        taken: Counter[_Add] = Counter()  # requests each add got into the engine this pass
        if command is not None:
            self._work = self._units(command)
        while self._work is not None:  # at least one request per pass, whatever the budget
            unit = next(self._work, _DONE)
            if unit is _DONE:
                command = self._next_command(0)
                self._work = self._units(command) if command is not None else None
            elif isinstance(unit, _Add):
                taken[unit] += 1
            elif unit is not None:
                answers.append(unit)
            if time.monotonic() >= deadline:
                break
        # Stats first, then the event loop's pending counts: admission never counts less.
        self.stats = self.engine.stats()
        for add, num_requests in taken.items():
            self._loop.call_soon_threadsafe(self._taken, add, num_requests * add.params.num_seqs)
        for answer in answers:
            self._loop.call_soon_threadsafe(*answer)

    def _units(self, command) -> Iterator[_Add | tuple | None]:
        """A command's work, one request (at most n sequences) per item: an add yields itself
        for each request the engine took, and last the callback that answers its caller."""
        if isinstance(command, _Abort):
            for rid in command.request_ids:
                self.engine.abort_request(rid)
                yield None
        elif isinstance(command, _Add):
            yield from self._add(command)

    def _add(self, command: _Add) -> Iterator[_Add | tuple | None]:
        added = []
        for rid, prompt in zip(command.group.request_ids, command.prompts, strict=True):
            try:
                self.engine.add_request(prompt, command.params, rid, command.arrival_time)
            except ValueError as e:
                for done in added:
                    self.engine.abort_request(done)
                yield self._reject, command, e
                return
            added.append(rid)
            yield command
        yield _resolve, command.done, None

    def _reject(self, command: _Add, error: ValueError) -> None:
        self._drop(command.group)
        if not command.done.done():
            command.done.set_exception(error)


def _resolve(future: asyncio.Future, value) -> None:
    if not future.done():
        future.set_result(value)
