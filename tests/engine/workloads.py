"""Engine workloads and transformers' answers to them, shared by the engine tests on any device
(test_greedy_matches_transformers.py, test_fp8_engine.py, test_prompt_logprobs.py) and on CUDA
(tests/kernels/test_engine_on_cuda.py)."""

from __future__ import annotations

import random
from functools import cache

import torch
from pagoda_worker.engine.config import EngineConfig
from pagoda_worker.engine.llm_engine import LLMEngine
from pagoda_worker.engine.sampling_params import SamplingParams
from transformers import AutoModelForCausalLM


def mixed_workload(seed: int, num_requests: int = 36) -> list[tuple[list[int], int]]:
    """(prompt ids, max_tokens) pairs: varied lengths, and families of prompts sharing prefixes."""
    rng = random.Random(seed)
    shared_prefixes = [[1] + [rng.randrange(3, 512) for _ in range(n)] for n in (23, 40)]
    work = []
    for i in range(num_requests):
        if i % 3 == 0:
            prompt = [1] + [rng.randrange(3, 512) for _ in range(rng.randint(0, 60))]
        else:
            prefix = shared_prefixes[i % 2]
            prompt = prefix + [rng.randrange(3, 512) for _ in range(rng.randint(0, 12))]
        work.append((prompt, rng.randint(1, 24)))
    return work


@cache
def hf_model(model_dir):
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def hf_greedy(model_dir, prompt: list[int], max_tokens: int) -> list[int]:
    with torch.no_grad():
        out = hf_model(model_dir).generate(
            torch.tensor([prompt]), max_new_tokens=max_tokens, do_sample=False, top_k=None,
            top_p=None, temperature=None, eos_token_id=2, pad_token_id=0,
        )  # fmt: skip
    return out[0, len(prompt) :].tolist()


def run_staggered(engine: LLMEngine, work, per_step: int = 3) -> list[list[int]]:
    """Add a few requests every step, as a server would see them arrive; each one's greedy
    token ids, in the order of `work`."""
    params = [SamplingParams(temperature=0.0, max_tokens=m) for _, m in work]
    pending = list(zip([p for p, _ in work], params, strict=True))
    ids, results = [], {}
    while pending or engine.has_unfinished_requests():
        for prompt, sp in pending[:per_step]:
            ids.append(engine.add_request(prompt, sp))
        pending = pending[per_step:]
        for out in engine.step():
            if out.finished:
                results[out.request_id] = out.outputs[0].token_ids
    return [results[i] for i in ids]


# Tight budgets force every code path: chunked prefill (token budget 16), preemption (a KV cache
# of 24 blocks of 8 tokens for 36 requests), prefix-cache hits (shared prefixes).
def tight_engine(model_dir, **settings) -> LLMEngine:
    config = EngineConfig(
        model=str(model_dir), block_size=8, num_kv_blocks=24, max_num_batched_tokens=16,
        max_num_seqs=12, **settings,
    )  # fmt: skip
    return LLMEngine(config)


def check_against_transformers(model_dir, seed: int, **settings) -> LLMEngine:
    """Greedy outputs of mixed_workload(seed) on a tight engine (with `settings`) equal
    transformers', and the workload did preempt and hit the prefix cache, leaking no block."""
    engine = tight_engine(model_dir, **settings)
    work = mixed_workload(seed)
    got = run_staggered(engine, work)
    for (prompt, max_tokens), tokens in zip(work, got, strict=True):
        assert tokens == hf_greedy(model_dir, prompt, max_tokens), f"prompt {prompt}"
    stats = engine.stats()
    assert stats.num_preemptions > 0, "the workload was meant to force preemptions"
    assert stats.prefix_cache_hits > 0, "the workload was meant to hit the prefix cache"
    assert stats.num_free_blocks == stats.num_gpu_blocks, "blocks leaked"
    return engine
