"""What the engine settles before its first step: the device, torch's CPU threads, the context
length and the token ids that end a completion. KV-cache sizing is kv_cache_sizing.py's; FP8
checks are precision.py's."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig

from pagoda_worker.models.llama import LlamaForCausalLM
from pagoda_worker.models.loader import ModelLoadError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {name!r} was asked for, but CUDA is not available here")
    return device


def rank_device(name: str, rank: int, size: int) -> torch.device:
    """The device of tensor-parallel rank `rank` of `size`: on CUDA, visible GPU number `rank`."""
    device = resolve_device(name)
    if size == 1 or device.type != "cuda":
        return device
    if device.index is not None:
        raise ModelLoadError(
            f"device {name!r} is one GPU, and tensor_parallel_size {size} runs on GPUs 0 to "
            f"{size - 1}: give device cuda (or auto), and pick the GPUs with CUDA_VISIBLE_DEVICES"
        )
    visible = torch.cuda.device_count()
    if visible < size:
        raise ModelLoadError(f"tensor_parallel_size {size} needs {size} GPUs; {visible} visible")
    return torch.device("cuda", rank)


def cpu_threads(wanted: int | None, ranks: int = 1) -> int:
    """Torch's threads on CPU, in each of `ranks` tensor-parallel processes: by default one core
    is left to the server's event loop and tokenizers, and the rest are shared between the ranks.
    Threads beyond the free cores make each step wait for a descheduled one: on a busy 2-core
    machine two threads made the average step 15x slower than one."""
    return wanted or max((len(os.sched_getaffinity(0)) - 1) // ranks, 1)


def max_model_len(wanted: int | None, model: LlamaForCausalLM) -> int:
    """The context window: `wanted` (the config's max_model_len), at most the model's."""
    limit = model.shape.max_position
    wanted = wanted or limit
    if wanted > limit:
        raise ModelLoadError(
            f"max_model_len {wanted} exceeds the model's context window of {limit} tokens"
        )
    return wanted


def eos_token_ids(hf_config: Any, model_dir: Path, tokenizer: Any) -> set[int]:
    """EOS ids from the config, the generation config (chat models add their turn-end
    tokens there) and the tokenizer."""
    sources = [getattr(hf_config, "eos_token_id", None)]
    if (model_dir / "generation_config.json").is_file():
        sources.append(GenerationConfig.from_pretrained(model_dir).eos_token_id)
    if tokenizer is not None:
        sources.append(tokenizer.eos_token_id)
    ids: set[int] = set()
    for eos in sources:
        ids.update([eos] if isinstance(eos, int) else eos or [])
    return ids
