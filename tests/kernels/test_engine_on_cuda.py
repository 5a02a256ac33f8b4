"""The whole engine on the GPU: Triton kernels, CUDA graphs and KV-cache sizing together."""

from __future__ import annotations

import pytest
import torch
from pagoda_worker.engine.config import EngineConfig
from pagoda_worker.engine.llm_engine import LLMEngine
from pagoda_worker.layers.fp8_linear import FP8, Fp8Linear, fp8_supported
from pagoda_worker.models.source import ModelLoadError

from tests.engine.workloads import (
    check_against_transformers,
    hf_greedy,
    mixed_workload,
    run_staggered,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_greedy_fp32_matches_transformers_with_cuda_graphs(stories_dir):
    """Chunked prefill, prefix hits and preemption, decode steps replayed from CUDA graphs."""
    engine = check_against_transformers(stories_dir, seed=0)
    assert engine.core.device.type == "cuda" and engine.core.dtype == torch.float32
    assert engine.core.runner.graphs is not None and engine.core.runner.graphs.sizes == [
        1,
        2,
        4,
        8,
        12,
    ]


@pytest.mark.parametrize("family", ["llama3", "mistral", "qwen2", "qwen3"])
def test_greedy_fp32_matches_transformers_per_family(tiny_models, family):
    check_against_transformers(tiny_models[family], seed=1)


def test_greedy_fp32_matches_transformers_eager(stories_dir):
    config = EngineConfig(
        model=str(stories_dir), block_size=16, num_kv_blocks=40, max_num_batched_tokens=48,
        max_num_seqs=16, enforce_eager=True,
    )  # fmt: skip
    engine = LLMEngine(config)
    assert engine.core.runner.graphs is None
    work = mixed_workload(seed=2, num_requests=20)
    for (prompt, max_tokens), tokens in zip(work, run_staggered(engine, work), strict=True):
        assert tokens == hf_greedy(stories_dir, prompt, max_tokens), f"prompt {prompt}"


def test_kv_cache_fills_the_memory_budget(stories_dir):
    """Run alone: other processes on the GPU change what is free while the engine starts."""
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info()
    others = total - free - torch.cuda.memory_reserved()
    reserved_before = torch.cuda.memory_reserved()
    utilization = 0.5
    engine = LLMEngine(EngineConfig(model=str(stories_dir), gpu_memory_utilization=utilization))
    budget = utilization * total - others - reserved_before
    caches = engine.core.runner.kv_caches
    kv_bytes = sum(c.numel() * c.element_size() for c in caches)
    reserved = torch.cuda.memory_reserved() - reserved_before
    gib = [round(x / 2**30, 2) for x in (budget, reserved, kv_bytes)]
    numbers = "budget, reserved, KV (GiB): {} {} {}".format(*gib)
    assert reserved <= budget, f"over the memory budget: {numbers}"
    assert kv_bytes > 0.9 * budget, f"the KV cache should take what the rest leaves: {numbers}"
    assert engine.core.kv_capacity_tokens * caches[0][:, 0, 0].numel() * 4 * len(caches) == kv_bytes


needs_fp8 = pytest.mark.skipif(
    not torch.cuda.is_available() or not fp8_supported(torch.device("cuda")),
    reason="needs a GPU with FP8 tensor cores (compute capability ≥ 8.9)",
)


@needs_fp8
def test_fp8_weights_and_kv_cache_with_cuda_graphs(stories_dir):
    """Decode steps replay graphs holding both FP8 paths (weight-only and _scaled_mm); the answers
    stay near bf16's (test_fp8_quality.py measures how near)."""
    settings = dict(model=str(stories_dir), dtype="bfloat16", num_kv_blocks=64, max_num_seqs=32)
    plain = LLMEngine(EngineConfig(**settings))
    fp8 = LLMEngine(EngineConfig(**settings, quantization="fp8", kv_cache_dtype="fp8"))
    assert isinstance(fp8.core.model.model.layers[0].self_attn.qkv_proj, Fp8Linear)
    assert fp8.core.runner.graphs is not None and fp8.core.runner.kv_caches[0].dtype == FP8
    work = mixed_workload(seed=4, num_requests=24)
    ours, theirs = run_staggered(fp8, work), run_staggered(plain, work)
    assert [len(t) for t in ours] == [len(t) for t in theirs]
    # Random prompts leave the model unsure: some first choices flip (FP8 garbage would keep ~0).
    assert sum(a[0] == b[0] for a, b in zip(ours, theirs, strict=True)) >= 12


@needs_fp8
def test_fp8_weights_need_a_16_bit_model(stories_dir):
    with pytest.raises(ModelLoadError, match="add --dtype bfloat16"):
        LLMEngine(EngineConfig(model=str(stories_dir), quantization="fp8"))  # float32 weights


needs_pdl = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() < (9, 0),
    reason="programmatic dependent launch needs a Hopper or later GPU",
)


@needs_pdl
def test_programmatic_dependent_launch_changes_no_token(stories_dir, monkeypatch):
    """Kernels that start before the previous one ends (kernels/pdl.py) must wait for its
    writes: a missing wait shows as different tokens from the same engine without PDL."""
    settings = dict(model=str(stories_dir), dtype="bfloat16", num_kv_blocks=64, max_num_seqs=32)
    work = mixed_workload(seed=5, num_requests=24)
    outputs = []
    for pdl in ("1", "0"):
        monkeypatch.setenv("PAGODA_PDL", pdl)
        engine = LLMEngine(EngineConfig(**settings, quantization="fp8", kv_cache_dtype="fp8"))
        assert engine.core.runner.graphs is not None
        outputs.append(run_staggered(engine, work))
        del engine
    assert outputs[0] == outputs[1]
