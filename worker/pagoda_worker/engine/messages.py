"""What the engine core and the server's front end say to each other, and how it is encoded.

The engine core runs in a process of its own (core_process.py); the front end sends it commands
and reads one report per loop pass. Everything here is torch-free msgspec, so both sides encode
and decode without Python-level copies. A step's report holds only what changed: the new token
ids of each sequence, never the whole text or token list, so its size does not grow with the
length of the outputs.
"""

from __future__ import annotations

import msgspec

from pagoda_worker.engine.loop_timing import PassTiming
from pagoda_worker.engine.outputs import FinishReason, TokenLogprob
from pagoda_worker.engine.sampling_params import SamplingParams


class EngineStats(msgspec.Struct):
    num_running: int
    num_waiting: int
    kv_cache_usage: float  # fraction of KV blocks in use
    num_gpu_blocks: int
    num_free_blocks: int
    kv_capacity_tokens: int
    prefix_cache_queries: int  # tokens looked up, cumulative
    prefix_cache_hits: int  # tokens found, cumulative
    num_preemptions: int  # cumulative


# ----- engine core -> front end --------------------------------------------------------------


class SeqDelta(msgspec.Struct, array_like=True, omit_defaults=True):
    """What one sequence gained in one step."""

    index: int  # which of the request's n completions
    token_ids: list[int]
    logprobs: list[float] | None = None  # of each new token, when the request needs them
    top: list[dict[int, float]] | None = None  # alternatives per new token, with `logprobs`
    finish_reason: FinishReason | None = None  # EOS, a stop token id or max_tokens


class CoreOutput(msgspec.Struct, array_like=True, omit_defaults=True):
    """A request's news in one step; stop strings are the front end's to find."""

    request_id: str
    seqs: list[SeqDelta]
    num_cached_tokens: int = 0
    scheduled_time: float | None = None  # wall clock of its first scheduling
    # prompt_logprobs: complete, in the request's first output that has a token.
    prompt_logprobs: list[TokenLogprob | None] | None = None


class Rejection(msgspec.Struct, array_like=True):
    """The engine refused an add (nothing of it is kept): its InvalidRequest's field and reason."""

    add_id: int
    field: str
    reason: str


class Ready(msgspec.Struct, tag=True):
    """The model is loaded; what the front end needs to know about it."""

    model_name: str
    model_folder: str  # where the tokenizer lives
    max_model_len: int
    kv_capacity_tokens: int
    eos_token_ids: list[int]


class LoadFailed(msgspec.Struct, tag=True):
    error: str


class Report(msgspec.Struct, tag=True, omit_defaults=True):
    """One loop pass: any message is also a heartbeat."""

    stats: EngineStats
    outputs: list[CoreOutput] = []
    taken: list[tuple[int, int]] = []  # (add id, sequences the stats count now)
    added: list[int] = []  # adds whose requests are all in the engine
    rejected: list[Rejection] = []
    slowest_pass: PassTiming | None = None  # when a pass was the slowest so far
    most_pass_cpu_s: float = 0.0


class Failed(msgspec.Struct, tag=True):
    """The loop failed: the engine is in an unknown state and the process exits."""

    error: str


FromCore = Ready | LoadFailed | Report | Failed


# ----- front end -> engine core --------------------------------------------------------------


class AddRequests(msgspec.Struct, tag=True):
    """One API call: a request per prompt, all with the same parameters."""

    add_id: int
    request_ids: list[str]
    prompts: list[list[int]]
    params: SamplingParams


class AbortRequests(msgspec.Struct, tag=True):
    request_ids: list[str]


class FinishSeqs(msgspec.Struct, tag=True):
    """Sequences the front end ended (a stop string): the engine stops computing them."""

    seqs: list[tuple[str, int]]  # (request id, completion index)


class Faults(msgspec.Struct, tag=True):
    """TEST ONLY (worker/pagoda_worker/server/faults.py): make the loop misbehave on purpose.
    wedged: the loop keeps its heartbeat but takes no request and runs no step.
    step_delay_s: every step waits this long first, as a much bigger model would.
    hang_s: the next step blocks this long, heartbeat included, as a stuck device.
    fail_after_steps: that many steps later, a step raises `fail_message` (a lost device)."""

    wedged: bool = False
    step_delay_s: float = 0.0
    hang_s: float = 0.0
    fail_after_steps: int | None = None
    fail_message: str = "device lost"


class Shutdown(msgspec.Struct, tag=True):
    pass


ToCore = AddRequests | AbortRequests | FinishSeqs | Faults | Shutdown

encode = msgspec.msgpack.Encoder().encode
decode_from_core = msgspec.msgpack.Decoder(FromCore).decode
decode_to_core = msgspec.msgpack.Decoder(ToCore).decode
