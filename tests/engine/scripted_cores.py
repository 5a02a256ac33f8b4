"""Engine cores that follow a script instead of running a model, for AsyncLLMEngine's tests.

The engine process builds them from their dotted name (`AsyncLLMEngine(..., core=...)`), so
they live in an importable module of their own. Canaries (ignore_eos) get their token at once;
other requests wait forever; an empty prompt is refused, as the real core refuses it. Their
stats are slow to read, as a busy engine's are.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pagoda_worker.engine.config import EngineConfig
from pagoda_worker.engine.errors import InvalidRequest
from pagoda_worker.engine.messages import CoreOutput, EngineStats, SeqDelta
from pagoda_worker.engine.outputs import FinishReason

GATE_VARIABLE = "PAGODA_TEST_GATE"  # GatedCore: a file path; add_request([0]) waits for it


class WaitingCore:
    """Answers the warm-up canary only: later canaries and every request wait forever."""

    def __init__(self, config: EngineConfig) -> None:
        self.model_name = "scripted"
        self.model_folder = config.model  # the front end loads the tokenizer from here
        self.max_model_len = 512
        self.kv_capacity_tokens = 4096
        self.eos_token_ids: set[int] = set()
        self.waiting: list[str] = []
        self.canaries: list[str] = []
        self.canaries_answered = 0

    def close(self) -> None:
        pass  # no other processes to stop

    def add_request(self, prompt, params, request_id) -> str:
        if not prompt:
            raise InvalidRequest("prompt", "must contain at least one token")
        if params.ignore_eos and not self.canaries_answered:
            self.canaries.append(request_id)
        else:
            self.waiting.append(request_id)
        return request_id

    def abort_request(self, request_id: str) -> None:
        if request_id in self.waiting:
            self.waiting.remove(request_id)

    def finish_seq(self, request_id: str, index: int) -> None:
        pass

    def check_ranks(self) -> None:
        pass  # one rank

    def has_unfinished_requests(self) -> bool:
        return bool(self.canaries)

    def step(self, laps=None) -> list[CoreOutput]:
        self.canaries_answered += len(self.canaries)
        outputs = [
            CoreOutput(rid, [SeqDelta(0, [5], finish_reason=FinishReason.LENGTH)], 0, time.time())
            for rid in self.canaries
        ]
        self.canaries.clear()
        return outputs

    def stats(self) -> EngineStats:
        time.sleep(0.05)
        return EngineStats(len(self.canaries), len(self.waiting), 0.0, 1, 1, 4096, 0, 0, 0)


class GatedCore(WaitingCore):
    """Holds the engine loop inside add_request for the prompt [0] until the gate file exists."""

    def add_request(self, prompt, params, request_id) -> str:
        if prompt == [0]:
            gate = Path(os.environ[GATE_VARIABLE])
            while not gate.exists():
                time.sleep(0.01)
        return super().add_request(prompt, params, request_id)
