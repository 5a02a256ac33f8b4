"""What the kernel tests share: how close is close enough, and whether Triton is interpreted."""

from __future__ import annotations

import os

import torch

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref||, NaN if out has NaN (poisoned outputs that were never written)."""
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / ref.norm()).item()


# Bounds per dtype (METHOD: fp32 far under 1e-3, bf16/fp16 operands 1e-3..1e-2).
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1.6e-2, torch.float16: 2e-3}
