"""Engine settings: one dataclass, shared by the offline API, the CLI and the server."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields


@dataclass
class EngineConfig:
    model: str
    load_format: str = "safetensors"  # safetensors | dummy (random weights from config.json)
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    attention_backend: str = "auto"  # auto | reference | triton
    block_size: int = 16
    max_model_len: int | None = None  # defaults to the model's context window
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    enable_prefix_caching: bool = True
    # KV cache budget: bytes on CPU, or a fraction of the device's memory on GPU.
    kv_cache_bytes: int = 256 * 2**20
    gpu_memory_utilization: float = 0.90
    num_kv_blocks: int | None = None  # fixes the KV-cache size, overriding the budgets above
    enforce_eager: bool = False  # no CUDA graphs
    async_scheduling: bool = True  # launch step N+1 before reading step N's tokens
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            ("load_format", self.load_format in ("safetensors", "dummy")),
            ("dtype", self.dtype in ("auto", "float32", "bfloat16", "float16")),
            ("attention_backend", self.attention_backend in ("auto", "reference", "triton")),
            ("block_size", self.block_size >= 1),
            ("max_model_len", self.max_model_len is None or self.max_model_len >= 1),
            ("max_num_seqs", self.max_num_seqs >= 1),
            ("max_num_batched_tokens", self.max_num_batched_tokens >= 1),
            ("kv_cache_bytes", self.kv_cache_bytes > 0),
            ("gpu_memory_utilization", 0.0 < self.gpu_memory_utilization <= 1.0),
            ("num_kv_blocks", self.num_kv_blocks is None or self.num_kv_blocks >= 1),
        ]
        for name, ok in checks:
            if not ok:
                raise ValueError(f"invalid engine setting {name}={getattr(self, name)!r}")


_HELP = {
    "load_format": "safetensors, or dummy: random weights from config.json (for benchmarks)",
    "dtype": "weights and activations dtype: auto (the model's), float32, bfloat16, float16",
    "device": "auto (cuda when available), cpu, cuda, cuda:N",
    "attention_backend": "auto (triton on CUDA, reference elsewhere), reference, triton",
    "block_size": "tokens per KV-cache block",
    "max_model_len": "context window (defaults to the model's)",
    "max_num_seqs": "most sequences in one step",
    "max_num_batched_tokens": "token budget of one step (prefill chunks + decodes)",
    "enable_prefix_caching": "reuse KV blocks of shared prompt prefixes",
    "kv_cache_bytes": "KV-cache budget in bytes on CPU",
    "gpu_memory_utilization": "fraction of GPU memory the worker may use (weights + KV cache)",
    "num_kv_blocks": "KV-cache size in blocks, overriding the memory budget",
    "enforce_eager": "disable CUDA graphs",
    "async_scheduling": "launch each step before reading the previous step's tokens, so host "
    "bookkeeping overlaps the device's work",
    "seed": "seed for requests that bring none",
}


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    """Add one --flag per EngineConfig field (except model, which callers add themselves)."""
    group = parser.add_argument_group("engine")
    for f in fields(EngineConfig):
        if f.name == "model":
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            group.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=f.default, help=_HELP[f.name]
            )
        else:
            kind = {"int": int, "float": float, "int | None": int}.get(f.type, str)
            group.add_argument(flag, type=kind, default=f.default, help=_HELP[f.name])


def engine_config_from_args(args: argparse.Namespace) -> EngineConfig:
    values = {f.name: getattr(args, f.name) for f in fields(EngineConfig) if hasattr(args, f.name)}
    return EngineConfig(**values)
