"""Choose the attention backend for a device."""

from __future__ import annotations

import torch

from worker.layers.attention import AttentionBackend, ReferenceAttention


def select_attention_backend(name: str, device: torch.device) -> AttentionBackend:
    """`auto` means the fastest backend the device has; `reference` runs anywhere."""
    if name in ("auto", "reference"):
        return ReferenceAttention()
    raise ValueError(f"attention backend {name!r} is not available on {device}")
