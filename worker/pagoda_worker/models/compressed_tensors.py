"""FP8 checkpoints in the compressed-tensors format (llm-compressor's, the one vLLM reads).

`config.json`'s `quantization_config` describes how the checkpoint's Linear layers are stored.
Pagoda reads one family of them: FP8 (e4m3) weights with a scale per tensor or per output
channel, activations quantized per token at run time or with a static per-tensor scale, and
optionally per-layer KV-cache scales. Anything else is refused with one error naming the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError

from pagoda_worker.models.source import ModelLoadError

FORMAT = "float-quantized"
TARGETS = ["Linear"]


class QuantArgs(BaseModel):
    """compressed-tensors' QuantizationArgs: the fields that decide how tensors are stored."""

    num_bits: int = 8
    type: str = "int"
    symmetric: bool = True
    strategy: str | None = None
    group_size: int | None = None
    dynamic: bool | str = False

    @property
    def resolved_strategy(self) -> str:
        """compressed-tensors infers a missing strategy from group_size (-1: per channel)."""
        if self.strategy is not None:
            return self.strategy
        if self.group_size is None:
            return "tensor"
        return "channel" if self.group_size == -1 else "group"


class ConfigGroup(BaseModel):
    targets: list[str]
    weights: QuantArgs | None = None
    input_activations: QuantArgs | None = None
    output_activations: QuantArgs | None = None
    format: str | None = None


class CompressedTensorsConfig(BaseModel):
    quant_method: str
    format: str | None = None
    config_groups: dict[str, ConfigGroup] = {}
    ignore: list[str] = []
    kv_cache_scheme: QuantArgs | None = None
    sparsity_config: dict | None = None
    transform_config: dict | None = None


@dataclass(frozen=True)
class Fp8Scheme:
    """How a supported checkpoint stores its Linear layers."""

    static_input: bool  # a per-tensor `input_scale` in the checkpoint; else per-token at run time
    ignore: tuple[str, ...]  # module names or `re:<regex>`; those layers stay in the model dtype

    def ignores(self, module: str) -> bool:
        """Matched like compressed-tensors: a name equals, a `re:` pattern matches its start."""
        return any(
            re.match(pattern[3:], module) if pattern.startswith("re:") else pattern == module
            for pattern in self.ignore
        )


class Unsupported(Exception):
    """One key of quantization_config that Pagoda cannot read, and why."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")


def checkpoint_scheme(hf_config) -> Fp8Scheme | None:
    """None for a checkpoint without quantization_config; raises ModelLoadError for one that
    Pagoda cannot read."""
    raw = getattr(hf_config, "quantization_config", None)
    if raw is None:
        return None
    where = f"{hf_config.name_or_path}/config.json: quantization_config"
    try:
        return fp8_scheme(CompressedTensorsConfig.model_validate(raw))
    except ValidationError as exc:
        raise ModelLoadError(f"{where} is not a compressed-tensors config: {exc}") from exc
    except Unsupported as exc:
        raise ModelLoadError(f"{where}.{exc}") from exc


def fp8_scheme(config: CompressedTensorsConfig) -> Fp8Scheme:
    if config.quant_method != "compressed-tensors":
        raise Unsupported(
            "quant_method",
            f"{config.quant_method!r} checkpoints are not supported; Pagoda reads FP8 "
            "checkpoints in the compressed-tensors format (llm-compressor's, as vLLM does), "
            "or quantizes a bf16/fp16 checkpoint itself with --quantization fp8",
        )
    if config.sparsity_config and config.sparsity_config.get("format", "dense") != "dense":
        raise Unsupported("sparsity_config", "sparse (compressed) weights are not supported")
    if config.transform_config:
        raise Unsupported("transform_config", "transformed (rotated) weights are not supported")
    if not config.config_groups:
        raise Unsupported("config_groups", "no group of layers is quantized")
    kinds = {
        _static_input(name, group, config.format) for name, group in config.config_groups.items()
    }
    if len(kinds) > 1:
        raise Unsupported(
            "config_groups",
            "groups quantize Linear layers' activations differently (static and dynamic); "
            "Pagoda reads checkpoints whose layers all share one scheme",
        )
    _check_kv_cache(config.kv_cache_scheme)
    return Fp8Scheme(static_input=kinds.pop(), ignore=tuple(config.ignore))


def _static_input(name: str, group: ConfigGroup, default_format: str | None) -> bool:
    """Checks one config group; returns whether its activations have static scales."""
    key = f"config_groups.{name}"
    fmt = group.format or default_format
    if fmt != FORMAT:
        raise Unsupported(
            f"{key}.format" if group.format else "format",
            f"{fmt!r} is not supported; Pagoda reads FP8 checkpoints in the {FORMAT!r} format",
        )
    if group.targets != TARGETS:
        raise Unsupported(
            f"{key}.targets",
            f"{group.targets} is not supported; Pagoda reads groups that target {TARGETS}",
        )
    if group.weights is None:
        raise Unsupported(f"{key}.weights", "unquantized weights are not supported")
    _check_fp8(group.weights, f"{key}.weights", "weights")
    weight_strategy = group.weights.resolved_strategy
    if weight_strategy not in ("tensor", "channel"):
        raise Unsupported(
            f"{key}.weights.strategy",
            f"strategy {weight_strategy!r} weight scales are not supported; Pagoda reads FP8 "
            "checkpoints with tensor or channel scales",
        )
    if group.output_activations is not None:
        raise Unsupported(
            f"{key}.output_activations", "quantized output activations are not supported"
        )
    return _static_activations(group.input_activations, f"{key}.input_activations")


def _static_activations(args: QuantArgs | None, key: str) -> bool:
    if args is None:  # weight-only checkpoint: activations are quantized per token at run time
        return False
    _check_fp8(args, key, "activations")
    strategy = args.resolved_strategy
    if args.dynamic is True and strategy == "token":
        return False
    if args.dynamic is False and strategy == "tensor":
        return True
    kind = (
        "dynamic" if args.dynamic is True else "static" if args.dynamic is False else args.dynamic
    )
    raise Unsupported(
        f"{key}.strategy",
        f"{kind} per-{strategy} activation scales are not supported; Pagoda reads FP8 "
        "checkpoints with dynamic per-token or static per-tensor activation scales",
    )


def _check_kv_cache(args: QuantArgs | None) -> None:
    if args is None:
        return
    _check_fp8(args, "kv_cache_scheme", "KV-cache scales")
    if args.resolved_strategy != "tensor":
        raise Unsupported(
            "kv_cache_scheme.strategy",
            f"strategy {args.resolved_strategy!r} KV-cache scales are not supported; Pagoda "
            "reads one k_scale and one v_scale per layer (strategy 'tensor')",
        )


def _check_fp8(args: QuantArgs, key: str, what: str) -> None:
    """Symmetric 8-bit floats: FP8 e4m3 with scales and no zero points."""
    if args.type != "float":
        raise Unsupported(
            f"{key}.type", f"{args.type!r} {what} are not supported; Pagoda reads FP8 (float)"
        )
    if args.num_bits != 8:
        raise Unsupported(
            f"{key}.num_bits",
            f"{args.num_bits}-bit {what} are not supported; Pagoda reads 8-bit FP8",
        )
    if not args.symmetric:
        raise Unsupported(
            f"{key}.symmetric",
            f"asymmetric {what} (with zero points) are not supported; Pagoda reads symmetric FP8",
        )
