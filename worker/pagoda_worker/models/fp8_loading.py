"""FP8 linear layers in a loaded model: quantized at load time, or read from an FP8 checkpoint.

Only the decoder layers' projections go to FP8; embeddings, norms and lm_head stay in the model
dtype (FP8's error would show most in the logits, for a small share of the weights).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from pagoda_worker.layers.attention import KVScales
from pagoda_worker.layers.fp8_linear import ALIGNMENT, FP8, Fp8Linear, fits_fp8
from pagoda_worker.models.compressed_tensors import Fp8Scheme
from pagoda_worker.models.source import ModelLoadError

log = logging.getLogger(__name__)

PROJECTIONS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
SCALES = ("weight_scale", "input_scale")
KV_SCALES = {"k_scale": "k", "v_scale": "v"}  # checkpoint name -> KVScales field


def projection_names(model: nn.Module) -> list[str]:
    """Names only: holding the modules would keep replaced layers alive."""
    return [
        name
        for name, module in model.named_modules()
        if type(module) is nn.Linear and name.rpartition(".")[2] in PROJECTIONS
    ]


def _projection(model: nn.Module, name: str) -> nn.Linear:
    linear = model.get_submodule(name)
    assert isinstance(linear, nn.Linear), name  # projection_names lists only those
    return linear


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    owner, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(owner), leaf, module)


def _weight_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def quantize_online(model: nn.Module, device: torch.device) -> None:
    """Each projection whose sizes fit goes to FP8 on `device`, one layer at a time: the device
    never holds more than one layer in both dtypes."""
    before, quantized, kept = _weight_bytes(model), 0, []
    for name in projection_names(model):
        linear = _projection(model, name)
        if fits_fp8(linear.in_features, linear.out_features):
            _replace(model, name, Fp8Linear.quantized(linear.to(device)))
            quantized += 1
        else:
            kept.append((name, linear))
    if kept:
        log.warning(
            "fp8: %d layers stay in %s, their sizes are not multiples of %d: %s",
            len(kept), str(kept[0][1].weight.dtype).removeprefix("torch."), ALIGNMENT,
            ", ".join(f"{name} ({m.in_features} -> {m.out_features})" for name, m in kept),
        )  # fmt: skip
    log.info(
        "fp8: %d linear layers quantized to FP8, weights %s -> %s bytes",
        quantized, f"{before:,}", f"{_weight_bytes(model):,}",
    )  # fmt: skip


def per_channel_scales(tensors: dict[str, torch.Tensor], where: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's weight scales as float32 [rows] (a tensor's one scale repeated), so the
    parts of a fused layer concatenate like their weights; input scales as float32 scalars."""
    out = dict(tensors)
    for name, scale in tensors.items():
        module, _, leaf = name.rpartition(".")
        if leaf == "weight_scale":
            rows = _rows(tensors, module, where)
            if scale.numel() not in (1, rows):
                raise ModelLoadError(
                    f"{where}: {name} has shape {tuple(scale.shape)}; Pagoda reads one scale "
                    f"per tensor or one per output channel ({rows})"
                )
            out[name] = scale.float().reshape(-1).expand(rows).contiguous()
        elif leaf == "input_scale":
            if scale.numel() != 1:
                raise ModelLoadError(
                    f"{where}: {name} has shape {tuple(scale.shape)}; Pagoda reads one static "
                    "input scale per tensor"
                )
            out[name] = scale.float().reshape(())
    return out


def _rows(tensors: dict[str, torch.Tensor], module: str, where: Path) -> int:
    weight = tensors.get(f"{module}.weight")
    if weight is None:
        raise ModelLoadError(f"{where}: the checkpoint has {module}.weight_scale but no weight")
    return weight.shape[0]


def in_model_dtype(name: str, tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """FP8 weights and their float32 scales keep their dtypes; the rest takes the model's."""
    if tensor.dtype == FP8 or name.rpartition(".")[2] in SCALES:
        return tensor
    return tensor.to(dtype)


def use_fp8_layers(
    model: nn.Module,
    scheme: Fp8Scheme,
    tensors: dict[str, torch.Tensor],
    fused: dict[str, tuple[str, ...]],
    where: Path,
) -> None:
    """Turns the projections that the checkpoint stores in FP8 into empty Fp8Linear layers (on
    the model's device, meta while loading) for load_state_dict to fill, after checking that
    the checkpoint's tensors (not fused yet) hold FP8 weights for exactly those."""
    expected, fp8, kept = set(), 0, 0
    for name in projection_names(model):
        owner, _, leaf = name.rpartition(".")
        parts = [f"{owner}.{part}" for part in fused.get(leaf, (leaf,))]
        if _ignored(parts, scheme, where):
            kept += 1
            continue
        _replace(model, name, _empty_fp8_like(_projection(model, name), scheme, name, where))
        expected.update(parts)
        fp8 += 1
    stored = {n.removesuffix(".weight_scale") for n in tensors if n.endswith(".weight_scale")}
    if stored - expected:
        raise ModelLoadError(
            f"{where}: the checkpoint stores {', '.join(sorted(stored - expected)[:5])} in FP8; "
            "Pagoda reads FP8 weights only for decoder projections that "
            "quantization_config.ignore does not list"
        )
    if expected - stored:
        raise ModelLoadError(
            f"{where}: quantization_config puts {', '.join(sorted(expected - stored)[:5])} in "
            "FP8, but the checkpoint has no weight_scale for them"
        )
    activations = "static per-tensor" if scheme.static_input else "dynamic per-token"
    log.info(
        "fp8 checkpoint: %d linear layers in FP8 (%s activation scales), %d ignored",
        fp8, activations, kept,
    )  # fmt: skip


def _ignored(parts: list[str], scheme: Fp8Scheme, where: Path) -> bool:
    """Whether the checkpoint keeps a layer out of FP8; the parts of a fused layer must agree."""
    ignored = [part for part in parts if scheme.ignores(part)]
    if ignored and len(ignored) < len(parts):
        owner = parts[0].rpartition(".")[0]
        raise ModelLoadError(
            f"{where}: Pagoda fuses {owner}'s {', '.join(p.rpartition('.')[2] for p in parts)} "
            "into one layer, so quantization_config.ignore must list all of them or none; "
            f"it lists {', '.join(p.rpartition('.')[2] for p in ignored)}"
        )
    return bool(ignored)


def _empty_fp8_like(linear: nn.Linear, scheme: Fp8Scheme, name: str, where: Path) -> Fp8Linear:
    try:
        with torch.device(linear.weight.device):
            return Fp8Linear(
                linear.in_features, linear.out_features, linear.bias is not None,
                scheme.static_input,
            )  # fmt: skip
    except ValueError as exc:
        raise ModelLoadError(f"{where}: {name}: {exc}") from exc


def pop_kv_scales(state: dict[str, torch.Tensor]) -> dict[str, KVScales]:
    """Removes the checkpoint's KV-cache scales from `state`; returns them by attention module."""
    found: dict[str, dict[str, float]] = {}
    for name in [n for n in state if n.rpartition(".")[2] in KV_SCALES]:
        module, _, leaf = name.rpartition(".")
        found.setdefault(module, {})[KV_SCALES[leaf]] = state.pop(name).item()
    return {module: KVScales(**scales) for module, scales in found.items()}


def use_kv_scales(
    model: nn.Module, scales: dict[str, KVScales], fp8_kv_cache: bool, where: Path
) -> None:
    if not scales:
        return
    if not fp8_kv_cache:
        log.info("the checkpoint's KV-cache scales are not used: the KV cache is not in FP8")
        return
    modules = dict(model.named_modules())
    for module, kv_scales in scales.items():
        attention = modules.get(module)
        if attention is None or not hasattr(attention, "kv_scales"):
            raise ModelLoadError(
                f"{where}: the checkpoint has KV-cache scales for {module}, "
                "which is not an attention layer of this model"
            )
        attention.kv_scales = kv_scales
