"""Writes small FP8 checkpoints in the compressed-tensors format (what llm-compressor saves and
vLLM reads) from a tiny model folder, quantizing its Linear layers here."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max
# The checkpoint's Linear layers: compressed-tensors' target "Linear" takes them all.
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head")


def fp8_args(**changes) -> dict:
    """An 8-bit float QuantizationArgs as compressed-tensors writes it, fields it adds included."""
    args = dict(
        num_bits=8, type="float", symmetric=True, strategy="tensor", dynamic=False,
        group_size=None, block_structure=None, actorder=None, observer="minmax",
        observer_kwargs={},
    )  # fmt: skip
    return args | changes


def quantization_config(
    weights: str = "channel", static_input: bool = False, ignore=("lm_head",), kv_cache=False
) -> dict:
    activations = (
        fp8_args(strategy="tensor", dynamic=False)
        if static_input
        else fp8_args(strategy="token", dynamic=True, observer=None)
    )
    group = dict(
        targets=["Linear"], weights=fp8_args(strategy=weights),
        input_activations=activations, output_activations=None, format="float-quantized",
    )  # fmt: skip
    return dict(
        quant_method="compressed-tensors", format="float-quantized",
        quantization_status="compressed", config_groups={"group_0": group}, ignore=list(ignore),
        kv_cache_scheme=fp8_args() if kv_cache else None, global_compression_ratio=1.5,
        sparsity_config={}, version="0.12.2",
    )  # fmt: skip


def listed(module: str, ignore) -> bool:
    """compressed-tensors' matching: a name equals, a `re:` pattern matches from the start."""
    return any(re.match(p[3:], module) if p.startswith("re:") else p == module for p in ignore)


def quantize(weight: torch.Tensor, strategy: str) -> tuple[torch.Tensor, torch.Tensor]:
    """FP8 weight and its float32 scale: shape [1] per tensor, [N, 1] per channel."""
    w = weight.float()
    if strategy == "tensor":
        scale = (w.abs().amax() / FP8_MAX).reshape(1)
    else:
        scale = w.abs().amax(dim=1, keepdim=True) / FP8_MAX
    return (w / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


def write_fp8_checkpoint(
    source: Path,
    folder: Path,
    weights: str = "channel",
    static_input: bool = False,
    ignore=("lm_head",),
    kv_cache: bool = False,
) -> dict[str, torch.Tensor]:
    """Copies the model at `source` to `folder` with its Linear layers (those not in `ignore`) in
    FP8; returns the tensors written."""
    tensors = {}
    for path in sorted(source.glob("*.safetensors")):
        tensors |= load_file(path)
    generator = torch.Generator().manual_seed(0)
    written = {}
    for name, tensor in tensors.items():
        module, _, leaf = name.rpartition(".")
        if leaf != "weight" or module.rpartition(".")[2] not in LINEARS or listed(module, ignore):
            written[name] = tensor
            continue
        written[name], written[f"{module}.weight_scale"] = quantize(tensor, weights)
        if static_input:  # distinct per layer, so a fused layer's maximum is telling
            written[f"{module}.input_scale"] = torch.rand(1, generator=generator) + 0.01
    config = json.loads((source / "config.json").read_text())
    if kv_cache:
        for layer in range(config["num_hidden_layers"]):
            written[f"model.layers.{layer}.self_attn.k_scale"] = torch.tensor(0.25 * (layer + 1))
            written[f"model.layers.{layer}.self_attn.v_scale"] = torch.tensor(0.5 * (layer + 3))
    config["quantization_config"] = quantization_config(weights, static_input, ignore, kv_cache)
    write_model(source, folder, config, written)
    return written


def write_model(source: Path, folder: Path, config: dict, tensors: dict[str, torch.Tensor]):
    """`source`'s folder with another config.json and one safetensors file of `tensors`."""
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("*.safetensors*"))
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    if tensors:
        save_file(tensors, folder / "model.safetensors")
