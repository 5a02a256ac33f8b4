"""Engine settings: one dataclass, shared by the offline API, the CLI and the server."""

from __future__ import annotations

import argparse
from dataclasses import Field, dataclass, fields

from pydantic import ByteSize, TypeAdapter, ValidationError

from pagoda_worker.models.source import DEFAULT_MODEL


@dataclass
class EngineConfig:
    model: str = str(DEFAULT_MODEL)  # a model folder or a Hugging Face id (org/name)
    load_format: str = "safetensors"  # safetensors | dummy (random weights from config.json)
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    quantization: str = "none"  # none | fp8 (checkpoints already in FP8 are detected by themselves)
    kv_cache_dtype: str = "auto"  # auto (the model's dtype) | fp8
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
    cpu_threads: int | None = None  # torch threads on CPU; None: usable cores minus one
    tensor_parallel_size: int = 1  # processes (GPUs) one model is split across
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            ("load_format", self.load_format in ("safetensors", "dummy")),
            ("dtype", self.dtype in ("auto", "float32", "bfloat16", "float16")),
            ("quantization", self.quantization in ("none", "fp8")),
            ("kv_cache_dtype", self.kv_cache_dtype in ("auto", "fp8")),
            ("attention_backend", self.attention_backend in ("auto", "reference", "triton")),
            ("block_size", self.block_size >= 1),
            ("max_model_len", self.max_model_len is None or self.max_model_len >= 1),
            ("max_num_seqs", self.max_num_seqs >= 1),
            ("max_num_batched_tokens", self.max_num_batched_tokens >= 1),
            ("kv_cache_bytes", self.kv_cache_bytes > 0),
            ("gpu_memory_utilization", 0.0 < self.gpu_memory_utilization <= 1.0),
            ("num_kv_blocks", self.num_kv_blocks is None or self.num_kv_blocks >= 1),
            ("cpu_threads", self.cpu_threads is None or self.cpu_threads >= 1),
            ("tensor_parallel_size", self.tensor_parallel_size >= 1),
        ]
        for name, ok in checks:
            if not ok:
                raise ValueError(f"invalid engine setting {name}={getattr(self, name)!r}")


_HELP = {
    "load_format": "safetensors, or dummy: random weights from config.json (for benchmarks)",
    "dtype": "weights and activations dtype: auto (the model's), float32, bfloat16, float16",
    "quantization": "none, or fp8: weights quantized to FP8 at load (per output channel), "
    "activations per token (needs a GPU of compute capability 8.9 or later)",
    "kv_cache_dtype": "auto (the model's dtype), or fp8: an FP8 KV cache, twice the tokens",
    "device": "auto (cuda when available), cpu, cuda, cuda:N",
    "attention_backend": "auto (triton on CUDA, reference elsewhere), reference, triton",
    "block_size": "tokens per KV-cache block",
    "max_model_len": "context window in tokens",
    "max_num_seqs": "most sequences in one step",
    "max_num_batched_tokens": "token budget of one step (prefill chunks + decodes)",
    "enable_prefix_caching": "reuse KV blocks of shared prompt prefixes",
    "kv_cache_bytes": "KV-cache budget on CPU",
    "gpu_memory_utilization": "fraction of GPU memory the worker may use (weights + KV cache)",
    "num_kv_blocks": "KV-cache size in blocks, overriding the memory budgets",
    "enforce_eager": "disable CUDA graphs",
    "async_scheduling": "launch each step before reading the previous step's tokens, so host "
    "bookkeeping overlaps the device's work",
    "cpu_threads": "threads for the model's math on CPU (more threads than free cores make "
    "every step wait for a descheduled one)",
    "tensor_parallel_size": "split the model across this many GPUs (one process each, NCCL; "
    "on CPU, processes and gloo)",
    "seed": "seed for requests that bring none",
}


# Flags that take a byte count accept size suffixes: 256MiB, 4GiB, 1.5GB, 512k.
_BYTE_FIELDS = {"kv_cache_bytes"}


def parse_bytes(text: str) -> int:
    """`argparse` type for sizes; the message names the accepted forms."""
    try:
        return int(TypeAdapter(ByteSize).validate_python(text))
    except ValidationError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size: give bytes, or a number with a unit such as 256MiB or 4GiB"
        ) from None


def format_bytes(size: int) -> str:
    return ByteSize(size).human_readable().replace(".0", "")


def describe_default(value: object) -> str:
    """How --help shows a default: switches as on/off."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "none"
    return str(value)


def with_default(help_text: str, value: object) -> str:
    return f"{help_text} (default: {describe_default(value)})"


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    """Add one --flag per EngineConfig field (except model, which callers add themselves).

    A flag that is not given leaves no attribute (SUPPRESS), so EngineConfig's own default,
    or a config file, decides; --help shows that default, read from the dataclass."""
    group = parser.add_argument_group("engine")
    for f in fields(EngineConfig):
        if f.name != "model":
            group.add_argument(
                "--" + f.name.replace("_", "-"),
                default=argparse.SUPPRESS,
                help=with_default(_HELP[f.name], _shown_default(f)),
                **_parsing(f),
            )


def _parsing(f: Field) -> dict:
    assert isinstance(f.type, str)  # `from __future__ import annotations` keeps types as text
    if f.type == "bool":
        return {"action": argparse.BooleanOptionalAction}
    if f.name in _BYTE_FIELDS:
        return {"type": parse_bytes, "metavar": "SIZE"}
    return {"type": {"int": int, "float": float, "int | None": int}.get(f.type, str)}


def _shown_default(f: Field) -> object:
    if f.name in _BYTE_FIELDS:
        assert isinstance(f.default, int)  # byte counts
        return format_bytes(f.default)
    return _DEFAULT_TEXT.get(f.name, f.default)


# Defaults that read better in words than as the dataclass's value.
_DEFAULT_TEXT = {
    "max_model_len": "the model's",
    "num_kv_blocks": "from the budget",
    "cpu_threads": "usable cores minus one, shared by the ranks, at least 1",
}


def engine_config_from_args(args: argparse.Namespace) -> EngineConfig:
    values = {f.name: getattr(args, f.name) for f in fields(EngineConfig) if hasattr(args, f.name)}
    return EngineConfig(**values)
