"""The engine core's loop, in-process: a scripted core and channel, one pass at a time."""

from __future__ import annotations

import gc
from collections import deque
from dataclasses import dataclass, field

import pytest
from pagoda_worker.engine.core_loop import CoreLoop, CoreLoopOptions
from pagoda_worker.engine.errors import InvalidRequest
from pagoda_worker.engine.loop_timing import Laps
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
    SeqDelta,
    Shutdown,
    ToCore,
    decode_from_core,
    encode,
)
from pagoda_worker.engine.sampling_params import SamplingParams

REFUSED_PROMPT = [666]


@dataclass
class FakeCore:
    """Records each call as an event; keeps only what its stats need: live sequences."""

    requests: dict[str, int] = field(default_factory=dict)  # request id -> sequences
    steps: deque[list[CoreOutput]] = field(default_factory=deque)  # step() results, in turn
    events: list[str] = field(default_factory=list)

    def add_request(self, prompt: list[int], params: SamplingParams, request_id: str) -> str:
        if prompt == REFUSED_PROMPT:
            raise InvalidRequest("prompt", f"{prompt} is refused")
        self.events.append(f"add {request_id}")
        self.requests[request_id] = params.num_seqs
        return request_id

    def abort_request(self, request_id: str) -> None:
        self.events.append(f"abort {request_id}")
        self.requests.pop(request_id, None)

    def finish_seq(self, request_id: str, index: int) -> None:
        self.events.append(f"finish {request_id}/{index}")

    def check_ranks(self) -> None:
        pass  # one rank

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    def step(self, laps: Laps) -> list[CoreOutput]:
        self.events.append("step")
        return self.steps.popleft() if self.steps else []

    def stats(self) -> EngineStats:
        return EngineStats(
            num_running=0,
            num_waiting=sum(self.requests.values()),
            kv_cache_usage=0.0,
            num_gpu_blocks=8,
            num_free_blocks=8,
            kv_capacity_tokens=128,
            prefix_cache_queries=0,
            prefix_cache_hits=0,
            num_preemptions=0,
        )


@dataclass
class FakeChannel:
    """Hands out what was pushed, once; keeps what the loop sends and how long it would wait."""

    inbox: list[ToCore] = field(default_factory=list)
    sent: list[FromCore] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)

    def push(self, *commands: ToCore) -> None:
        self.inbox.extend(commands)

    def receive(self, wait_s: float) -> list[ToCore]:
        self.waits.append(wait_s)
        commands, self.inbox = self.inbox, []
        return commands

    def send(self, message: FromCore) -> None:
        # Through the wire format, as the real channel: a copy of the message as it was sent.
        self.sent.append(decode_from_core(encode(message)))

    @property
    def reports(self) -> list[Report]:
        return [m for m in self.sent if isinstance(m, Report)]


def make_loop(**options: float) -> tuple[CoreLoop, FakeCore, FakeChannel]:
    core, channel = FakeCore(), FakeChannel()
    return CoreLoop(core, channel, CoreLoopOptions(**options)), core, channel


def add_command(add_id: int, prompts: list[list[int]], n: int = 1) -> AddRequests:
    request_ids = [f"req-{add_id}-{i}" for i in range(len(prompts))]
    return AddRequests(add_id, request_ids, prompts, SamplingParams(n=n))


def run_passes(loop: CoreLoop, count: int) -> None:
    for _ in range(count):
        loop.run_pass()


@pytest.fixture
def unfreeze_gc():
    """run() freezes every live object out of the collector's reach, as the engine process
    wants; give this test process's objects back afterwards."""
    yield
    gc.unfreeze()


def test_a_big_abort_is_spread_over_passes_with_a_step_between_its_requests():
    loop, core, channel = make_loop(command_budget_s=0.0)
    request_ids = [f"r{i}" for i in range(32)]
    core.requests = dict.fromkeys(request_ids, 1)
    channel.push(AbortRequests(request_ids))
    run_passes(loop, 40)
    abort_then_step = [event for rid in request_ids for event in (f"abort {rid}", "step")]
    assert core.events == abort_then_step[:-1]  # nothing left to step after the last abort


def test_an_add_spread_over_passes_reports_each_part_with_the_stats_that_count_it():
    loop, core, channel = make_loop(command_budget_s=0.0)
    channel.push(add_command(7, [[1], [2], [3]], n=2))
    run_passes(loop, 3)
    reports = channel.reports
    assert core.events == ["add req-7-0", "step", "add req-7-1", "step", "add req-7-2", "step"]
    assert [r.taken for r in reports] == [[(7, 2)]] * 3
    assert [r.stats.num_waiting for r in reports] == [2, 4, 6]
    assert [r.added for r in reports] == [[], [], [7]]


@pytest.mark.parametrize("budget_s", [0.0, 60.0], ids=["over-passes", "in-one-pass"])
def test_an_add_the_core_refuses_in_part_is_rejected_whole(budget_s: float):
    loop, core, channel = make_loop(command_budget_s=budget_s)
    channel.push(add_command(7, [[1], REFUSED_PROMPT, [3]]))
    run_passes(loop, 4)
    reports = channel.reports
    assert core.requests == {}
    assert [e for e in core.events if e != "step"] == ["add req-7-0", "abort req-7-0"]
    assert [r.rejected for r in reports if r.rejected] == [
        [Rejection(7, "prompt", f"{REFUSED_PROMPT} is refused")]
    ]
    assert not any(r.added for r in reports)
    assert reports[-1].stats.num_waiting == 0


def test_a_wedged_loop_keeps_its_heartbeat_but_applies_and_steps_nothing():
    loop, core, channel = make_loop()
    core.requests = {"old": 1}  # a step would be due
    core.steps.append([CoreOutput("old", [SeqDelta(0, [42])])])
    channel.push(Faults(wedged=True), add_command(1, [[1]]))
    run_passes(loop, 3)
    assert len(channel.reports) == 3
    assert core.events == []
    channel.push(Faults(wedged=False))
    loop.run_pass()
    assert core.events == ["add req-1-0", "step"]
    assert channel.reports[-1].outputs == [CoreOutput("old", [SeqDelta(0, [42])])]


def test_a_failing_step_sends_failed_and_raises(unfreeze_gc):
    loop, core, channel = make_loop()
    channel.push(Faults(fail_after_steps=1, fail_message="device lost"), add_command(1, [[1]]))
    with pytest.raises(RuntimeError, match="device lost"):
        loop.run()
    assert core.events == ["add req-1-0", "step"]  # the second step failed before it began
    failed = channel.sent[-1]
    assert isinstance(failed, Failed) and "device lost" in failed.error


def test_shutdown_ends_the_loop_cleanly(unfreeze_gc):
    loop, _, channel = make_loop()
    channel.push(Shutdown())
    loop.run()
    assert channel.sent == channel.reports  # the pass's report, nothing failed


def test_finish_seqs_reach_the_core_after_the_add_that_created_the_request():
    loop, core, channel = make_loop(command_budget_s=0.0)
    channel.push(add_command(1, [[1]], n=2), FinishSeqs([("req-1-0", 1)]))
    run_passes(loop, 4)
    assert [e for e in core.events if e != "step"] == ["add req-1-0", "finish req-1-0/1"]


def test_only_an_idle_pass_waits_for_commands():
    loop, _, channel = make_loop(idle_wait_s=0.25)
    channel.push(add_command(1, [[1]]))
    run_passes(loop, 2)
    assert channel.waits == [0.25, 0.0]  # then the core has a request to step
