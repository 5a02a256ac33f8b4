"""Load a Hugging Face model folder: config, safetensors weights (single or sharded), tokenizer.

Every way a folder can be wrong ends in one ModelLoadError that names the problem.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from transformers import AutoConfig

from pagoda_worker.layers.rotary import RotaryEmbedding
from pagoda_worker.models.compressed_tensors import Fp8Scheme, checkpoint_scheme
from pagoda_worker.models.fp8_loading import (
    in_model_dtype,
    per_channel_scales,
    pop_kv_scales,
    quantize_online,
    use_fp8_layers,
    use_kv_scales,
)
from pagoda_worker.models.llama import LlamaForCausalLM, LlamaShape
from pagoda_worker.models.sharding import Shards
from pagoda_worker.models.source import ModelLoadError
from pagoda_worker.parallel.group import SINGLE, TensorParallel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Architecture:
    qkv_bias: bool
    qk_norm: bool


# Hugging Face architecture name -> the switches of our one Llama-family implementation.
ARCHITECTURES = {
    "LlamaForCausalLM": Architecture(qkv_bias=False, qk_norm=False),
    "MistralForCausalLM": Architecture(qkv_bias=False, qk_norm=False),
    "Qwen2ForCausalLM": Architecture(qkv_bias=True, qk_norm=False),
    "Qwen3ForCausalLM": Architecture(qkv_bias=False, qk_norm=True),
}

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Checkpoint weights that we store fused: ours -> the checkpoint's parts, in order.
FUSED = {
    "qkv_proj": ("q_proj", "k_proj", "v_proj"),
    "gate_up_proj": ("gate_proj", "up_proj"),
}


def load_hf_config(model_dir: Path):
    if not model_dir.is_dir():
        raise ModelLoadError(f"model folder {model_dir} does not exist")
    if not (model_dir / "config.json").is_file():
        raise ModelLoadError(f"{model_dir} has no config.json: is it a Hugging Face model folder?")
    try:
        return AutoConfig.from_pretrained(model_dir, local_files_only=True)
    except (ValueError, OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{model_dir}/config.json cannot be read: {exc}") from exc


def checkpoint_quantization(hf_config) -> str:
    """Returns "fp8" for a checkpoint stored in FP8 that Pagoda reads, "none" for one without
    quantization_config; raises ModelLoadError for any other quantization."""
    return "none" if checkpoint_scheme(hf_config) is None else "fp8"


def resolve_dtype(requested: str, hf_config) -> torch.dtype:
    if requested == "auto":
        name = str(getattr(hf_config, "dtype", None) or "float32").removeprefix("torch.")
        return DTYPES.get(name, torch.float32)
    if requested not in DTYPES:
        raise ModelLoadError(
            f"dtype {requested!r} is not supported; use one of auto, {', '.join(DTYPES)}"
        )
    return DTYPES[requested]


def architecture_of(hf_config) -> Architecture:
    names = getattr(hf_config, "architectures", None) or []
    for name in names:
        if name in ARCHITECTURES:
            return _with_config_bias(ARCHITECTURES[name], hf_config)
    raise ModelLoadError(
        f"architecture {', '.join(names) or '(none given)'} is not supported; "
        f"supported: {', '.join(ARCHITECTURES)}"
    )


def _with_config_bias(arch: Architecture, hf_config) -> Architecture:
    """Llama-style configs may turn q/k/v bias on with `attention_bias`."""
    if getattr(hf_config, "attention_bias", False):
        return Architecture(qkv_bias=True, qk_norm=arch.qk_norm)
    return arch


def _within_sliding_window(shape: LlamaShape, hf_config) -> LlamaShape:
    """We have no sliding-window attention; up to the window's length, full attention computes
    the same thing, so a model with a window (Mistral-7B-v0.1: 4,096 of 32,768) keeps a context
    no longer than its window instead of giving different answers beyond it."""
    window = getattr(hf_config, "sliding_window", None)
    if not window or getattr(hf_config, "use_sliding_window", True) is False:
        return shape
    if window >= shape.max_position:
        return shape
    log.warning(
        "the model attends through a sliding window of %d tokens, which Pagoda does not "
        "implement: its context is limited to %d tokens (of %d)",
        window, window, shape.max_position,
    )  # fmt: skip
    return replace(shape, max_position=window)


def weight_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError) as exc:
            raise ModelLoadError(f"{index} is not a valid safetensors index: {exc}") from exc
        missing = [s for s in shards if not (model_dir / s).is_file()]
        if missing:
            raise ModelLoadError(f"{model_dir} is missing weight shards: {', '.join(missing)}")
        return [model_dir / s for s in shards]
    single = model_dir / "model.safetensors"
    if single.is_file():
        return [single]
    raise ModelLoadError(
        f"{model_dir} has no model.safetensors or model.safetensors.index.json "
        "(only safetensors checkpoints are supported)"
    )


def read_checkpoint(files: list[Path], shards: Shards) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors, or the parts of them this tensor-parallel rank holds."""
    tensors: dict[str, torch.Tensor] = {}
    for path in files:
        try:
            with safe_open(path, framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                    tensors[name] = shards.read(f, name)
        except (SafetensorError, OSError) as exc:
            raise ModelLoadError(f"{path} is not a readable safetensors file: {exc}") from exc
    return tensors


def fuse_checkpoint(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the checkpoint into our module tree, concatenating fused projections."""
    state: dict[str, torch.Tensor] = {}
    parts: dict[str, dict[int, torch.Tensor]] = {}  # fused name -> its parts by index
    part_to_fused = {p: (fused, i) for fused, ps in FUSED.items() for i, p in enumerate(ps)}
    for name, tensor in tensors.items():
        prefix, _, leaf = name.rpartition(".")
        owner, _, module = prefix.rpartition(".")
        if module in part_to_fused:
            fused, index = part_to_fused[module]
            parts.setdefault(f"{owner}.{fused}.{leaf}", {})[index] = tensor
        else:
            state[name] = tensor
    for name, pieces in parts.items():
        state[name] = _join(name, [pieces[i] for i in sorted(pieces)])
    return state


def _join(name: str, pieces: list[torch.Tensor]) -> torch.Tensor:
    if name.endswith(".input_scale"):  # the parts read one input: the largest scale covers all
        return torch.stack(pieces).amax()
    return torch.cat(pieces, dim=0)


def load_model(
    model_dir: Path,
    dtype: torch.dtype,
    device: torch.device,
    load_format: str,
    quantization: str = "none",
    fp8_kv_cache: bool = False,
    tp: TensorParallel = SINGLE,
):
    """Returns (model, hf_config) with weights in `dtype` on `device`: under tensor parallelism,
    this rank's part of the model, read from the checkpoint's slices alone.

    load_format "dummy" skips the checkpoint: weights are random (seeded by the caller), for
    benchmarking a model's shape without its files. quantization "fp8" quantizes the decoder's
    projections at load; a checkpoint stored in FP8 is read as stored, whatever `quantization`
    says. With fp8_kv_cache the checkpoint's KV-cache scales, if any, go to the attention layers.
    """
    hf_config = load_hf_config(model_dir)
    scheme = checkpoint_scheme(hf_config)
    arch = architecture_of(hf_config)
    try:
        shape = LlamaShape.from_hf(hf_config, arch.qkv_bias, arch.qk_norm)
    except (AttributeError, TypeError) as exc:
        raise ModelLoadError(f"{model_dir}/config.json lacks a required field: {exc}") from exc
    shape = _within_sliding_window(shape, hf_config)
    # Rotary tables are computed, not loaded: build them on the device first.
    try:
        rotary = RotaryEmbedding(hf_config, shape.head_dim, shape.max_position).to(device)
    except ValueError as exc:
        raise ModelLoadError(f"{model_dir}/config.json: {exc}") from exc
    if load_format == "dummy":
        model = _random_model(shape, rotary, dtype, device, tp)
        if quantization == "fp8" or scheme is not None:  # an FP8 model's benchmark runs FP8
            quantize_online(model, device)
    else:
        model = _checkpoint_model(model_dir, shape, rotary, dtype, scheme, fp8_kv_cache, tp)
        if quantization == "fp8" and scheme is None:
            quantize_online(model, device)
    return model.to(device).eval(), hf_config


def _checkpoint_model(
    model_dir: Path,
    shape: LlamaShape,
    rotary: RotaryEmbedding,
    dtype: torch.dtype,
    scheme: Fp8Scheme | None,
    fp8_kv_cache: bool,
    tp: TensorParallel,
) -> LlamaForCausalLM:
    """The model on the CPU (FP8 layers aside), with the checkpoint's weights."""
    with torch.device("meta"):
        model = LlamaForCausalLM(shape, rotary, tp)
    tensors = read_checkpoint(weight_files(model_dir), model.shards)
    if scheme is not None:
        use_fp8_layers(model, scheme, tensors, FUSED, model_dir)
        tensors = per_channel_scales(tensors, model_dir)
    state = fuse_checkpoint(tensors)
    kv_scales = pop_kv_scales(state)
    if shape.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    _check_weights(model_dir, model, state)
    model.load_state_dict(
        {k: in_model_dtype(k, v, dtype) for k, v in state.items()}, assign=True, strict=False
    )
    if shape.tie_word_embeddings:  # assign=True replaced the shared parameter: tie again
        model.lm_head.weight = model.model.embed_tokens.weight
    use_kv_scales(model, kv_scales, fp8_kv_cache, model_dir)
    return model


def _check_weights(
    model_dir: Path, model: LlamaForCausalLM, state: dict[str, torch.Tensor]
) -> None:
    expected = {n for n, _ in model.named_parameters()}
    missing, unexpected = expected - state.keys(), state.keys() - expected
    if missing:
        raise ModelLoadError(
            f"{model_dir} checkpoint lacks weights: {', '.join(sorted(missing)[:5])}"
        )
    if unexpected:
        raise ModelLoadError(
            f"{model_dir} checkpoint has weights this architecture does not use: "
            f"{', '.join(sorted(unexpected)[:5])}"
        )
    for name, param in model.named_parameters():
        if state[name].shape != param.shape:
            raise ModelLoadError(
                f"{model_dir}: weight {name} has shape {tuple(state[name].shape)}, "
                f"the config implies {tuple(param.shape)}"
            )


def _random_model(
    shape, rotary, dtype: torch.dtype, device: torch.device, tp: TensorParallel
) -> LlamaForCausalLM:
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return LlamaForCausalLM(shape, rotary, tp).eval()
    finally:
        torch.set_default_dtype(default)
