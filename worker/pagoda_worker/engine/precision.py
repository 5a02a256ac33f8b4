"""What the engine stores in FP8, checked against the device before anything loads.

FP8 weights need a GPU with FP8 tensor cores (compute capability 8.9: Ada, Hopper and later) and
activations in bf16 or fp16. An FP8 KV cache needs the same GPUs for the Triton kernels; the
reference attention reads and writes it anywhere, CPU included.
"""

from __future__ import annotations

import torch

from pagoda_worker.layers.fp8_linear import FP8, fp8_supported
from pagoda_worker.models.source import ModelLoadError

NEEDS = "fp8 needs a CUDA device with compute capability ≥ 8.9"


def _where(device: torch.device) -> str:
    if device.type != "cuda":
        return f"this engine runs on {device}"
    major, minor = torch.cuda.get_device_capability(device)
    return f"{torch.cuda.get_device_name(device)} has compute capability {major}.{minor}"


def check_fp8_weights(quantization: str, dtype: torch.dtype, device: torch.device) -> None:
    """quantization: "fp8" (asked for, or the checkpoint's own) or "none"."""
    if quantization != "fp8":
        return
    if not fp8_supported(device):
        raise ModelLoadError(
            f"{NEEDS} ({_where(device)}): serve this model on such a GPU, or without "
            "--quantization fp8 (an FP8 checkpoint cannot run elsewhere)"
        )
    if dtype not in (torch.bfloat16, torch.float16):
        raise ModelLoadError(
            f"FP8 layers compute in bfloat16 or float16, and this model loads as {dtype}: "
            "add --dtype bfloat16"
        )


def kv_cache_dtype(setting: str, dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """setting: "auto" (the model's dtype) or "fp8"."""
    if setting != "fp8":
        return dtype
    if device.type == "cuda" and not fp8_supported(device):
        raise ModelLoadError(f"an FP8 KV cache on a GPU: {NEEDS} ({_where(device)})")
    return FP8
