"""prompt_logprobs: each prompt token's logprob (and its top alternatives) under the model, as
transformers computes them, whatever the chunking, prefix cache, siblings or preemption."""

from __future__ import annotations

import random

import pytest
import torch
from pagoda_worker.engine.config import EngineConfig
from pagoda_worker.engine.llm_engine import LLMEngine
from pagoda_worker.engine.sampling_params import SamplingParams

from tests.engine.workloads import hf_model

pytestmark = pytest.mark.timeout(120)

PROMPT = [1] + [random.Random(5).randrange(3, 512) for _ in range(44)]


def hf_prompt_logprobs(model_dir, prompt: list[int]) -> torch.Tensor:
    """[len(prompt) - 1, vocab]: row q holds the distribution of token q + 1."""
    with torch.no_grad():
        logits = hf_model(model_dir)(torch.tensor([prompt])).logits[0, :-1]
    return torch.log_softmax(logits.float(), dim=-1)


def run(engine: LLMEngine, requests: list[tuple[list[int], SamplingParams]]) -> dict:
    ids = [engine.add_request(prompt, params) for prompt, params in requests]
    finished = {}
    while engine.has_unfinished_requests():
        finished |= {o.request_id: o for o in engine.step() if o.finished}
    return {rid: finished[rid] for rid in ids}


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"max_num_batched_tokens": 16},  # the prompt arrives in chunks
        {"num_kv_blocks": 10, "block_size": 8, "max_num_batched_tokens": 32},  # preemptions
    ],
)
def test_prompt_logprobs_match_transformers(stories_dir, settings):
    engine = LLMEngine(EngineConfig(model=str(stories_dir), **settings))
    plain = SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True)
    scored = SamplingParams(n=2, temperature=0.0, max_tokens=20, ignore_eos=True, prompt_logprobs=3)
    # The same prompt computed before, and beside: its cached blocks must not be skipped.
    run(engine, [(PROMPT, plain)])
    outputs = run(engine, [(PROMPT, plain), (PROMPT, scored), (PROMPT[:30], plain)])
    if "num_kv_blocks" in settings:
        assert engine.stats().num_preemptions > 0
    [entries] = [o.prompt_logprobs for o in outputs.values() if o.prompt_logprobs is not None]
    expected = hf_prompt_logprobs(stories_dir, PROMPT)
    assert entries[0] is None and len(entries) == len(PROMPT)
    for position, entry in enumerate(entries[1:], start=1):
        row = expected[position - 1]
        assert entry.token_id == PROMPT[position]
        assert entry.logprob == pytest.approx(row[PROMPT[position]].item(), abs=1e-4)
        top = row.topk(3)
        assert list(entry.top) == top.indices.tolist()
        assert list(entry.top.values()) == pytest.approx(top.values.tolist(), abs=1e-4)
