"""SiLU(gate) * up over the fused gate_up projection, in one pass."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from pagoda_worker.kernels.pdl import enter, pdl_args

BLOCK = 1024


@triton.jit
def _silu_and_mul_kernel(x_ptr, out_ptr, stride_x, stride_out, N: tl.constexpr,
                         BLOCK: tl.constexpr, PDL: tl.constexpr):  # fmt: skip
    enter(PDL)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < N
    gate = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0)
    up = tl.load(x_ptr + row * stride_x + N + cols, mask=mask, other=0.0)
    g = gate.to(tl.float32)
    # silu is rounded to the activation dtype before the product, as in PyTorch.
    silu = (g * tl.sigmoid(g)).to(gate.dtype)
    out = silu.to(tl.float32) * up.to(tl.float32)
    tl.store(out_ptr + row * stride_out + cols, out.to(gate.dtype), mask=mask)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """x: [T, 2 * I] (gate then up) -> [T, I]."""
    rows, width = x.shape
    if x.stride(1) != 1 or width % 2:
        raise ValueError("silu_and_mul needs [T, 2 * I] with a contiguous last dimension")
    n = width // 2
    out = torch.empty(rows, n, dtype=x.dtype, device=x.device)
    if rows:
        _silu_and_mul_kernel[(rows, triton.cdiv(n, BLOCK))](
            x, out, x.stride(0), out.stride(0), N=n, BLOCK=BLOCK, num_warps=4, **pdl_args(x.device)
        )
    return out
