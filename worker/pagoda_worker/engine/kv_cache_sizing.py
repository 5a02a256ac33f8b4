"""How many KV-cache blocks the engine gets.

`num_kv_blocks` in the config decides it; else, on CUDA, what `gpu_memory_utilization` of the
GPU leaves once the weights are loaded and the largest step's activations are set aside (measured
by running that step, and capturing the decode CUDA graphs, before the cache exists); on CPU,
`kv_cache_bytes`. The measuring steps lay out their tokens as a real step does (StepLayout).
"""

from __future__ import annotations

import numpy as np
import torch

from pagoda_worker.engine.config import EngineConfig
from pagoda_worker.engine.model_runner import (
    DecodeGraphs,
    ModelRunner,
    StepArrays,
    StepLayout,
    token_rows,
)
from pagoda_worker.layers.attention import AttentionBackend
from pagoda_worker.models.llama import LlamaForCausalLM
from pagoda_worker.models.loader import ModelLoadError


def num_kv_blocks(
    config: EngineConfig,
    model: LlamaForCausalLM,
    backend: AttentionBackend,
    device: torch.device,
    kv_dtype: torch.dtype,
    max_model_len: int,
) -> int:
    """config.num_kv_blocks, or as many blocks as the budget holds (at least one)."""
    block_bytes = kv_cache_block_bytes(model, config.block_size, kv_dtype)
    num_blocks = config.num_kv_blocks or (
        kv_cache_bytes(config, model, backend, device, kv_dtype, max_model_len) // block_bytes
    )
    if num_blocks < 1:
        raise ModelLoadError(
            f"the KV-cache budget holds no block of {block_bytes} bytes; raise kv_cache_bytes "
            "or gpu_memory_utilization"
        )
    return num_blocks


def kv_cache_block_bytes(model: LlamaForCausalLM, block_size: int, kv_dtype: torch.dtype) -> int:
    s, kv_heads = model.shape, model.shards.num_kv_heads  # this rank's
    element = torch.tensor([], dtype=kv_dtype).element_size()
    return 2 * s.num_layers * block_size * kv_heads * s.head_dim * element


def kv_cache_bytes(
    config: EngineConfig,
    model: LlamaForCausalLM,
    backend: AttentionBackend,
    device: torch.device,
    kv_dtype: torch.dtype,
    max_model_len: int,
) -> int:
    """The KV cache's memory budget."""
    if device.type != "cuda":
        return config.kv_cache_bytes
    torch.cuda.empty_cache()  # what loading freed (bf16 weights quantized to FP8) is free
    free, total = torch.cuda.mem_get_info(device)
    in_use = total - free  # our weights and allocator cache, and other processes
    activations = profile_activation_bytes(
        model, backend, config.block_size, kv_dtype, device,
        config.max_num_batched_tokens, config.max_num_seqs, max_model_len,
    )  # fmt: skip
    return int(config.gpu_memory_utilization * total) - in_use - activations


@torch.inference_mode()
def profile_activation_bytes(
    model: LlamaForCausalLM,
    backend: AttentionBackend,
    block_size: int,
    kv_dtype: torch.dtype,
    device: torch.device,
    max_num_batched_tokens: int,
    max_num_seqs: int,
    max_model_len: int,
) -> int:
    """Memory, beyond what is allocated now, that running takes besides the KV cache, measured on
    CUDA: the peak of the largest step (a prefill of max_num_batched_tokens with logits for
    max_num_seqs rows, upcast as the sampler does), plus what the decode CUDA graphs keep."""
    tokens = max_num_batched_tokens
    seq_len = min(tokens, max_model_len)
    lengths = [seq_len] * (tokens // seq_len) + ([tokens % seq_len] if tokens % seq_len else [])
    num_blocks = -(-seq_len // block_size) * len(lengths)
    runner = ModelRunner(model, backend, num_blocks, block_size, device, kv_dtype)
    prefill = _step_peak_bytes(runner, lengths, lengths, min(max_num_seqs, tokens))
    torch.cuda.empty_cache()  # later steps find no cached blocks either: measure fresh segments
    if backend.graph_safe:
        decode = _decode_graph_bytes(runner, max_num_seqs, max_model_len)
    else:
        decode = _step_peak_bytes(runner, [1] * max_num_seqs, [1] * max_num_seqs, 0)
    del runner
    torch.cuda.empty_cache()
    return prefill + decode


def _decode_graph_bytes(runner: ModelRunner, max_num_seqs: int, max_model_len: int) -> int:
    """What capturing the decode ladder takes: the eager warm-ups, the graphs' private pool (with
    the capture stream's cuBLAS workspace and each graph's own segments), the static inputs."""
    torch.cuda.synchronize(runner.device)
    before = torch.cuda.memory_reserved(runner.device)
    max_blocks = -(-max_model_len // runner.block_size)
    graphs = DecodeGraphs(runner, max_num_seqs, max_blocks)
    graphs.capture(runner)
    used = torch.cuda.memory_reserved(runner.device) - before
    del graphs
    return used


def _step_peak_bytes(
    runner: ModelRunner, query_lens: list[int], context_lens: list[int], num_logits: int
) -> int:
    """Run one step of these sequences (blocks assigned round-robin over the runner's cache)."""
    device, bs = runner.device, runner.block_size
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    n, width = len(query_lens), -(-max(context_lens) // bs)
    tables = np.arange(n * width, dtype=np.int32).reshape(n, width) % runner.kv_caches[0].shape[1]
    new = np.array(query_lens, np.int32)
    layout = StepLayout.of(new, np.array(context_lens, np.int32) - new, tables, bs)
    ids = np.random.randint(0, runner.model.shape.vocab_size, layout.num_tokens, np.int32)
    arrays = StepArrays.pack(
        layout, token_rows(layout, ids, None), np.arange(num_logits, dtype=np.int32)
    )
    logits, _ = runner.execute(runner.inputs_from(arrays), None)
    torch.softmax(logits.float(), dim=-1)  # upcast as the sampler does
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before
