"""Programmatic dependent launch (Hopper and later): a kernel starts while the one before it in
the stream drains, and waits (`enter`) before it touches memory that kernel may still use.

A Llama-3.1-8B decode step is ~330 kernels (counted from the profile in bench/NOTES.md); most are
tiny, and each pays its launch and ramp-up before doing work. With PDL the next kernel's programs
are already resident when the previous one ends, and the FP8 matmul loads its first weight tile (no
kernel writes weights) before the wait. Every program of a PDL kernel calls `enter`, so "the
previous kernel finished" stays transitive down the stream. PAGODA_PDL=0 turns it off (an escape
hatch, and the A/B switch in bench/NOTES.md).
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl


@functools.cache
def _supported(device_index: int) -> bool:
    return torch.cuda.get_device_capability(device_index) >= (9, 0)


def pdl_args(device: torch.device) -> dict[str, bool]:
    """The launch arguments of a kernel taking a `PDL: tl.constexpr`: on, where the device
    supports it and it is not turned off; never in Triton's CPU interpreter."""
    on = (
        device.type == "cuda"
        and os.environ.get("TRITON_INTERPRET") != "1"
        and os.environ.get("PAGODA_PDL", "1") != "0"
        and _supported(device.index if device.index is not None else torch.cuda.current_device())
    )
    return {"PDL": True, "launch_pdl": True} if on else {"PDL": False}


@triton.jit
def enter(PDL: tl.constexpr):
    """Wait until the previous kernel has finished and its writes are visible, then let the
    next kernel launch (its programs start once every program here has passed this point)."""
    if PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
