"""The engine in one thread, for the offline API and benchmarks: add requests, call step() in a
loop, read outputs with text.

It is the engine core (token ids) with the output processing (text, stop strings) right behind
it. The server runs the same two parts in two processes instead (async_engine.py).
"""

from __future__ import annotations

from pagoda_worker.engine.config import EngineConfig
from pagoda_worker.engine.core import EngineCore
from pagoda_worker.engine.loop_timing import Laps
from pagoda_worker.engine.messages import EngineStats
from pagoda_worker.engine.output_processor import OutputProcessor
from pagoda_worker.engine.outputs import RequestOutput
from pagoda_worker.engine.sampling_params import SamplingParams


class LLMEngine:
    def __init__(self, config: EngineConfig) -> None:
        self.core = EngineCore(config)
        self.tokenizer = self.core.tokenizer
        self.max_model_len = self.core.max_model_len
        self.processor = OutputProcessor(self.tokenizer, self.core.eos_token_ids)
        self._aborted: list[RequestOutput] = []  # reported by the next step

    def add_request(
        self,
        prompt_token_ids: list[int],
        params: SamplingParams,
        request_id: str | None = None,
        arrival_time: float | None = None,
    ) -> str:
        request_id = self.core.add_request(prompt_token_ids, params, request_id)
        self.processor.add(request_id, list(prompt_token_ids), params, arrival_time)
        return request_id

    def abort_request(self, request_id: str) -> None:
        self.core.abort_request(request_id)
        output = self.processor.abort(request_id)
        if output is not None:
            self._aborted.append(output)

    def has_unfinished_requests(self) -> bool:
        return self.core.has_unfinished_requests() or bool(self._aborted)

    def stats(self) -> EngineStats:
        return self.core.stats()

    def close(self) -> None:
        """Stop the engine's other tensor-parallel ranks, if any."""
        self.core.close()

    def step(self, laps: Laps | None = None) -> list[RequestOutput]:
        outputs, stopped = self.processor.process(self.core.step(laps))
        for request_id, index in stopped:
            self.core.finish_seq(request_id, index)
        aborted, self._aborted = self._aborted, []
        return aborted + outputs
