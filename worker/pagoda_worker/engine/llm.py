"""The offline API: LLM(model).generate(prompts, params)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from pagoda_worker.engine.config import EngineConfig
from pagoda_worker.engine.llm_engine import LLMEngine
from pagoda_worker.engine.outputs import RequestOutput, most_likely
from pagoda_worker.engine.sampling_params import SamplingParams
from pagoda_worker.models.source import DEFAULT_MODEL

if TYPE_CHECKING:
    from typing_extensions import TypeIs  # typing has it from Python 3.13

Prompt = str | list[int]


class LLM:
    def __init__(self, model: str = str(DEFAULT_MODEL), **engine_settings) -> None:
        """`model`: a Hugging Face model folder or id; by default the shipped stories260K."""
        self.engine = LLMEngine(EngineConfig(model=model, **engine_settings))
        self.tokenizer = self.engine.tokenizer

    def close(self) -> None:
        """Stop the engine's other tensor-parallel processes, if any (else nothing to do)."""
        self.engine.close()

    def __enter__(self) -> LLM:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def encode(self, prompt: Prompt) -> list[int]:
        return self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)

    def generate(
        self,
        prompts: Prompt | list[Prompt],
        params: SamplingParams | list[SamplingParams] | None = None,
    ) -> list[RequestOutput]:
        """Run every prompt to completion in one continuous batch; outputs in prompt order."""
        if _is_one_prompt(prompts):
            prompts = [prompts]
        params = params or SamplingParams()
        per_prompt = params if isinstance(params, list) else [params] * len(prompts)
        ids = [
            self.engine.add_request(self.encode(p), sp)
            for p, sp in zip(prompts, per_prompt, strict=True)
        ]
        finished: dict[str, RequestOutput] = {}
        while len(finished) < len(ids):
            for output in self.engine.step():
                if output.finished:
                    finished[output.request_id] = output
        # best_of: each prompt's n most likely completions, as the server returns them.
        return [
            replace(finished[i], outputs=most_likely(finished[i].outputs, sp.n))
            for i, sp in zip(ids, per_prompt, strict=True)
        ]


def _is_one_prompt(prompts: Prompt | list[Prompt]) -> TypeIs[Prompt]:
    """Text or token ids, rather than a list of prompts."""
    return isinstance(prompts, str) or bool(prompts and isinstance(prompts[0], int))
