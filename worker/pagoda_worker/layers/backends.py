"""Choose the attention backend for a device."""

from __future__ import annotations

import torch

from pagoda_worker.layers.attention import AttentionBackend, ReferenceAttention

BACKENDS = ("auto", "reference", "triton")


def select_attention_backend(name: str, device: torch.device) -> AttentionBackend:
    """`auto` is Triton on CUDA and the reference elsewhere; `reference` runs anywhere."""
    if name not in BACKENDS:
        raise ValueError(f"attention backend {name!r} is unknown; choose one of {BACKENDS}")
    if name == "reference" or (name == "auto" and device.type != "cuda"):
        return ReferenceAttention()
    if device.type != "cuda":
        raise ValueError(
            f"attention backend 'triton' needs a CUDA device, but the engine runs on {device}; "
            "use --attention-backend reference (or auto)"
        )
    from pagoda_worker.layers.triton_attention import TritonAttention  # needs Triton: CUDA only

    return TritonAttention(torch.cuda.get_device_properties(device).multi_processor_count)
