"""AsyncLLMEngine: the server's front end of the engine, streams of outputs for asyncio.

The engine core runs in a process of its own (core_process.py), so the HTTP work (JSON, SSE,
tokenizing, detokenizing) never competes with the engine's loop for one interpreter. This
side sends it commands (add, abort, stop a sequence) and takes one report per engine loop pass:
the step's new token ids for every request at once, which the OutputProcessor turns into text
and RequestOutputs here, stop strings included. Every report is also a heartbeat, so a wedged
engine or device shows up as a stale one; a dead engine process is noticed at once (its
sentinel), and every request in flight ends with an error. The engine keeps these facts (its
loop's health, when it last produced a token); what they mean for readiness is the server's
(worker/pagoda_worker/server/readiness.py).

Admission counts sequences (prompts x n), not API calls: one call may bring thousands. A call
that could never fit is refused as bad input; one that does not fit now, as a full queue.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any, Protocol

import msgspec

from pagoda_worker.engine.config import EngineConfig
from pagoda_worker.engine.core_client import EngineProcess
from pagoda_worker.engine.core_loop import CoreLoopOptions
from pagoda_worker.engine.core_process import DEFAULT_CORE
from pagoda_worker.engine.errors import InvalidRequest
from pagoda_worker.engine.loop_timing import PassTiming
from pagoda_worker.engine.messages import (
    AbortRequests,
    AddRequests,
    CoreOutput,
    EngineStats,
    Failed,
    Faults,
    FinishSeqs,
    FromCore,
    Rejection,
    Report,
)
from pagoda_worker.engine.output_processor import OutputProcessor
from pagoda_worker.engine.outputs import RequestOutput
from pagoda_worker.engine.request_group import CUT_SHUTDOWN, CUT_TIMEOUT, RequestGroup
from pagoda_worker.engine.sampling_params import SamplingParams
from pagoda_worker.models.tokenizer import tokenizer_for

log = logging.getLogger("pagoda.engine")


class EngineDeadError(RuntimeError):
    """The engine failed or stopped; requests can no longer be served."""


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
    command_budget_s: float = 0.005  # adds and aborts applied per engine loop pass, at most
    request_timeout_s: float | None = 600.0  # a request running longer is aborted
    idle_wait_s: float = 0.05  # an idle engine loop's heartbeat interval
    heartbeat_timeout_s: float = 30.0  # older heartbeat: unhealthy
    retry_after_s: int = 1


@dataclass(eq=False)
class _Add:
    """An add sent to the engine and not answered yet."""

    group: RequestGroup
    done: asyncio.Future
    pending_seqs: int  # sequences the engine's stats do not count yet


NO_STATS = EngineStats(0, 0, 0.0, 0, 0, 0, 0, 0, 0)


class AsyncLLMEngine:
    def __init__(
        self,
        config: EngineConfig,
        options: AsyncEngineOptions | None = None,
        core: str = DEFAULT_CORE,  # tests run scripted cores
    ) -> None:
        self.config = config
        self.options = options or AsyncEngineOptions()
        self.observer: OutputObserver | None = None  # sees every client request's outputs
        loop_options = CoreLoopOptions(self.options.command_budget_s, self.options.idle_wait_s)
        self._process = EngineProcess(config, loop_options, core)
        self.processor: OutputProcessor | None = None  # once loaded
        self.tokenizer: Any = None  # a Hugging Face tokenizer once loaded; None: the model has none
        self.model_name = ""
        self.max_model_len = 0
        self.kv_capacity_tokens = 0
        self._groups: dict[str, RequestGroup] = {}  # unfinished request id -> its group
        self._internal: set[RequestGroup] = set()  # the server's canaries: out of the metrics
        self._timers: dict[RequestGroup, asyncio.TimerHandle] = {}
        self._ids = count()
        self._adds: dict[int, _Add] = {}  # sent, not answered yet
        self._pending_seqs = 0  # sequences sent but not yet in the engine's stats
        self._heartbeat = time.monotonic()
        self._error: BaseException | None = None
        self._stopping = False
        self.stats = NO_STATS  # the engine's latest, from its reports
        self.slowest_pass = PassTiming()  # the engine loop's slowest pass so far, and why
        self.most_pass_cpu_s = 0.0
        self.faults = Faults()  # TEST ONLY: worker/pagoda_worker/server/faults.py
        # Any token out of the real engine proves it works: a canary's, or real traffic's.
        self.last_token_at: float | None = None  # time.monotonic() of the latest

    # ----- lifecycle (event loop) -----

    async def load(self) -> None:
        """Start the engine process; returns once its model is loaded."""
        ready = await self._process.start(self._on_message, self._on_exit)
        self._heartbeat = time.monotonic()
        self.model_name = ready.model_name
        self.max_model_len = ready.max_model_len
        self.kv_capacity_tokens = ready.kv_capacity_tokens
        self.tokenizer = await asyncio.to_thread(
            tokenizer_for, Path(ready.model_folder), self.config.load_format
        )
        self.processor = OutputProcessor(self.tokenizer, ready.eos_token_ids)
        # The tokenizer and the libraries live as long as the process: keep them out of the
        # collector's full passes, which would otherwise scan them all while streams wait.
        gc.collect()
        gc.freeze()

    async def stop(self) -> None:
        self._stopping = True
        await self._process.stop()
        self._fail_all(EngineDeadError("the engine was stopped"))

    def set_faults(self, faults: Faults) -> None:
        """TEST ONLY: make the engine loop misbehave (server/faults.py). `faults` keeps the
        standing ones; a hang or a failure happens once."""
        self._process.send(faults)
        self.faults = msgspec.structs.replace(faults, hang_s=0.0, fail_after_steps=None)

    @property
    def engine_pid(self) -> int | None:
        return self._process.pid

    # ----- health -----

    def heartbeat_age(self) -> float:
        return time.monotonic() - self._heartbeat

    @property
    def error(self) -> BaseException | None:
        return self._error

    def is_healthy(self) -> bool:
        alive = self._process.process.is_alive()
        fresh = self.heartbeat_age() < self.options.heartbeat_timeout_s
        return alive and fresh and self._error is None

    # ----- requests (event loop) -----

    async def generate(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        *,
        timeout_s: float | None = None,
        internal: bool = False,
    ) -> RequestGroup:
        """Queue one request per prompt; returns once the engine has taken them. `internal`:
        the server's own (canaries), neither admitted nor observed as client requests.

        Raises EngineDeadError, QueueFullError, or InvalidRequest (too many sequences, or the
        engine's own checks: a bad prompt).
        """
        if self._error is not None or self._stopping or self.processor is None:
            raise EngineDeadError(f"the engine is not running: {self._error or 'stopped'}")
        num_seqs = len(prompts) * params.num_seqs
        if not internal:
            self._admit(num_seqs, len(prompts), params)
        add_id = next(self._ids)
        group = RequestGroup([f"req-{add_id}-{i}" for i in range(len(prompts))], self._abort)
        arrival = time.time()
        for rid, prompt in zip(group.request_ids, prompts, strict=True):
            self._groups[rid] = group
            self.processor.add(rid, prompt, params, arrival)
        if internal:
            self._internal.add(group)
        add = _Add(group, asyncio.get_running_loop().create_future(), num_seqs)
        self._adds[add_id] = add
        self._pending_seqs += num_seqs
        self._process.send(AddRequests(add_id, group.request_ids, prompts, params))
        try:
            await add.done
        except asyncio.CancelledError:
            group.abort()  # the caller left before the engine took the requests
            raise
        finally:
            self._settle(add_id)  # all of them now: in the stats, or never
        timeout_s = self.options.request_timeout_s if timeout_s is None else timeout_s
        if timeout_s and not group.finished:
            self._timers[group] = asyncio.get_running_loop().call_later(
                timeout_s, self._expire, group
            )
        return group

    def _admit(self, num_seqs: int, num_prompts: int, params: SamplingParams) -> None:
        """Refuse, before any work, a call that can never fit or does not fit now."""
        limit = min(self.options.max_seqs_per_request, self.options.max_waiting_seqs)
        if num_seqs > limit:
            field = "best_of" if params.selects_best else "n"
            raise InvalidRequest(
                field,
                f"{num_prompts} prompt(s) x {field}={params.num_seqs} = {num_seqs} sequences; "
                f"this server takes at most {limit} per request",
            )
        num_waiting = self.stats.num_waiting + self._pending_seqs
        if num_waiting + num_seqs > self.options.max_waiting_seqs:
            raise QueueFullError(num_waiting, num_seqs, self.options.retry_after_s)

    def _taken(self, add_id: int, num_seqs: int) -> None:
        """The engine's stats count num_seqs more of the add's sequences: stop counting them
        as pending. An add applied over several passes is never counted twice."""
        add = self._adds.get(add_id)
        if add is not None:
            num_seqs = min(num_seqs, add.pending_seqs)
            add.pending_seqs -= num_seqs
            self._pending_seqs -= num_seqs

    def _settle(self, add_id: int) -> None:
        add = self._adds.pop(add_id, None)
        if add is not None:
            self._pending_seqs -= add.pending_seqs
            add.pending_seqs = 0

    def _answer(self, add_id: int, rejection: Rejection | None) -> None:
        add = self._adds.get(add_id)
        if add is None or add.done.done():
            return
        if rejection is None:
            add.done.set_result(None)
            return
        self._drop(add.group)
        add.done.set_exception(InvalidRequest(rejection.field, rejection.reason))

    def _abort(self, group: RequestGroup) -> None:
        """End the group's unfinished requests here at once, and in the engine next pass."""
        request_ids = sorted(group.unfinished)
        self._process.send(AbortRequests(request_ids))
        assert self.processor is not None  # generate() made the group once loaded
        for rid in request_ids:
            output = self.processor.abort(rid)
            if output is not None:
                self._route(output)

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

    # ----- the engine's reports (event loop) -----

    def _on_message(self, message: FromCore) -> None:
        self._heartbeat = time.monotonic()
        if isinstance(message, Failed):
            self._die(EngineDeadError(message.error))
            return
        if not isinstance(message, Report):
            return
        self.stats = message.stats  # first: admission never counts less than it should
        if message.slowest_pass is not None:
            self.slowest_pass = message.slowest_pass
        self.most_pass_cpu_s = message.most_pass_cpu_s
        for add_id, num_seqs in message.taken:
            self._taken(add_id, num_seqs)
        for add_id in message.added:
            self._answer(add_id, None)
        for rejection in message.rejected:
            self._answer(rejection.add_id, rejection)
        if message.outputs:
            self._deliver(message.outputs)

    def _on_exit(self, exit_code: int | None) -> None:
        if not self._stopping:
            log.error("the engine process exited with code %s", exit_code)
            self._die(EngineDeadError(f"the engine process exited with code {exit_code}"))

    def _die(self, error: EngineDeadError) -> None:
        self._error = self._error or error
        self._fail_all(self._error)

    def _deliver(self, core_outputs: list[CoreOutput]) -> None:
        assert self.processor is not None  # outputs are of requests, made once loaded
        outputs, stopped = self.processor.process(core_outputs)
        if stopped:
            self._process.send(FinishSeqs(stopped))
        if outputs:
            self.last_token_at = time.monotonic()
        for output in outputs:
            self._route(output)

    def _route(self, output: RequestOutput) -> None:
        group = self._groups.get(output.request_id)
        if group is None:
            return
        if output.finished:
            del self._groups[output.request_id]
        if self.observer and group not in self._internal:
            self.observer.on_output(output)
        group.put(output)
        if group.finished:
            self._forget(group)

    def _forget(self, group: RequestGroup) -> None:
        self._internal.discard(group)
        timer = self._timers.pop(group, None)
        if timer:
            timer.cancel()

    def _drop(self, group: RequestGroup) -> None:
        """Stop routing outputs to the group: the engine refused or lost its requests."""
        for rid in group.request_ids:
            self._groups.pop(rid, None)
            if self.processor is not None:
                self.processor.drop(rid)
        self._forget(group)

    def _fail_all(self, error: BaseException) -> None:
        """Fail every request, including adds the engine will never answer."""
        for add in self._adds.values():
            if not add.done.done():
                add.done.set_exception(error)
        for group in {*self._groups.values()}:
            self._drop(group)
            group.fail(error)
