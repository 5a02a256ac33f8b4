"""What every tensor-parallel rank builds before the first step, the same way on each: its part
of the model, a KV cache of the size all ranks agree on, the decode CUDA graphs. Rank 0 (the
engine core) adds the scheduler, the sampler and the tokenizer; the other ranks only run steps
(parallel/follower.py). Without tensor parallelism the one rank is the engine core.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pagoda_worker.engine.config import EngineConfig
from pagoda_worker.engine.kv_cache_sizing import num_kv_blocks
from pagoda_worker.engine.model_runner import ModelRunner
from pagoda_worker.engine.precision import check_fp8_weights, kv_cache_dtype
from pagoda_worker.engine.startup import cpu_threads, max_model_len
from pagoda_worker.layers.attention import AttentionBackend
from pagoda_worker.layers.backends import select_attention_backend
from pagoda_worker.layers.fp8_linear import FP8
from pagoda_worker.models.llama import LlamaForCausalLM
from pagoda_worker.models.loader import (
    checkpoint_quantization,
    load_hf_config,
    load_model,
    resolve_dtype,
)
from pagoda_worker.parallel.group import TensorParallel


@dataclass
class LoadedRank:
    model: LlamaForCausalLM  # this rank's part
    hf_config: Any
    device: torch.device
    dtype: torch.dtype
    quantization: str  # "fp8" for FP8 weights (asked for, or an FP8 checkpoint's), else "none"
    kv_dtype: torch.dtype
    backend: AttentionBackend
    max_model_len: int


def load_rank(config: EngineConfig, model_dir: Path, device: torch.device,
              tp: TensorParallel) -> LoadedRank:  # fmt: skip
    """This rank's part of the model on `device`, and the settings that follow from it."""
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(config.cpu_threads, tp.size))
    hf_config = load_hf_config(model_dir)
    dtype = resolve_dtype(config.dtype, hf_config)
    from_checkpoint = checkpoint_quantization(hf_config)  # an FP8 checkpoint stays FP8
    quantization = config.quantization if from_checkpoint == "none" else from_checkpoint
    check_fp8_weights(quantization, dtype, device)
    kv_dtype = kv_cache_dtype(config.kv_cache_dtype, dtype, device)
    torch.manual_seed(config.seed)  # dummy weights are reproducible
    model, hf_config = load_model(
        model_dir, dtype, device, config.load_format, quantization,
        fp8_kv_cache=kv_dtype == FP8, tp=tp,
    )  # fmt: skip
    return LoadedRank(
        model=model,
        hf_config=hf_config,
        device=device,
        dtype=dtype,
        quantization=quantization,
        kv_dtype=kv_dtype,
        backend=select_attention_backend(config.attention_backend, device),
        max_model_len=max_model_len(config.max_model_len, model),
    )


def build_runner(config: EngineConfig, rank: LoadedRank) -> ModelRunner:
    """The rank's runner: a KV cache of as many blocks as the tightest rank holds, and the
    decode graphs (every rank captures them together: their all-reduces are in the graphs)."""
    model, device = rank.model, rank.device
    num_blocks = model.tp.min(
        num_kv_blocks(config, model, rank.backend, device, rank.kv_dtype, rank.max_model_len),
        device,
    )
    runner = ModelRunner(
        model, rank.backend, num_blocks, config.block_size, device, rank.kv_dtype,
        config.max_num_seqs, rank.max_model_len,
    )  # fmt: skip
    if not config.enforce_eager:
        runner.capture_decode_graphs()
    return runner
