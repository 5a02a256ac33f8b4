"""FP8 (e4m3) kernels for the linear layers: per-token activation quantization, and a matmul of
bf16/fp16 activations with FP8 weights for small batches.

A small batch's matmul reads every weight once and does little arithmetic per byte, so halving
the bytes (FP8 weights, dequantized in registers) halves its time; cuBLAS's FP8 path does not
win there (see bench/NOTES.md). Large batches go through `torch._scaled_mm` with the activation
quantized per token by `quantize_rows`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from pagoda_worker.kernels.pdl import enter, pdl_args

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # torch.finfo(torch.float8_e4m3fn).max
# A row of zeros would get scale 0 and divide by it: the scale never goes below this.
MIN_SCALE = 1.0 / (FP8_MAX * 512.0)


@triton.jit
def _quantize_rows_kernel(
    x_ptr, q_ptr, scale_ptr, static_scale_ptr, K, stride_x, stride_q,
    STATIC: tl.constexpr, BLOCK_K: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    enter(PDL)
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_x
    if STATIC:
        scale = tl.load(static_scale_ptr)
    else:
        amax = tl.zeros([BLOCK_K], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            cols = k0 + tl.arange(0, BLOCK_K)
            x = tl.load(x_row + cols, mask=cols < K, other=0.0).to(tl.float32)
            amax = tl.maximum(amax, tl.abs(x))
        scale = tl.maximum(tl.max(amax, 0) / 448.0, 1.0 / (448.0 * 512.0))
    tl.store(scale_ptr + row, scale)
    for k0 in range(0, K, BLOCK_K):  # the row is in L2 by now
        cols = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_row + cols, mask=cols < K, other=0.0).to(tl.float32)
        q = tl.clamp(x / scale, -448.0, 448.0)
        tl.store(q_ptr + row * stride_q + cols, q.to(q_ptr.dtype.element_ty), mask=cols < K)


def quantize_block(k: int) -> tuple[int, int]:
    """(elements of a row per iteration, warps): a whole row per pass up to 16k elements, with
    enough warps to keep each thread's share small (measured: bench/fp8_layers.py)."""
    block = min(16384, triton.next_power_of_2(k))
    return block, 16 if block >= 16384 else 8 if block >= 4096 else 4


def quantize_rows(
    x: torch.Tensor, static_scale: torch.Tensor | None = None, block: tuple[int, int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] -> (FP8 [M, K], float32 scales [M, 1]) with x ≈ q * scale row by row: each row's
    own scale (dynamic, per token), or the checkpoint's one `static_scale` for every row."""
    num_rows, k = x.shape
    if x.stride(1) != 1:
        raise ValueError("quantize_rows needs rows with contiguous elements")
    q = torch.empty((num_rows, k), dtype=FP8, device=x.device)
    scales = torch.empty((num_rows, 1), dtype=torch.float32, device=x.device)
    if num_rows:
        static = static_scale is not None
        block_k, num_warps = block or quantize_block(k)
        _quantize_rows_kernel[(num_rows,)](
            x, q, scales, static_scale if static else scales, k, x.stride(0), q.stride(0),
            STATIC=static, BLOCK_K=min(block_k, triton.next_power_of_2(k)), num_warps=num_warps,
            **pdl_args(x.device),
        )  # fmt: skip
    return q, scales


@triton.jit
def _weight_only_kernel(
    x_ptr, w_ptr, w_scale_ptr, bias_ptr, out_ptr, M, N, K, stride_xm, stride_wn, stride_om,
    HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PDL: tl.constexpr,
):  # fmt: skip
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rows = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok, col_ok = rows < M, cols < N
    w_rows = w_ptr + cols[:, None].to(tl.int64) * stride_wn
    if BLOCK_M == 1:
        # One row: products summed on the CUDA cores; a tensor-core tile would be 15/16 padding.
        # No kernel writes the weights: the first tile loads while the previous kernel drains.
        ks = tl.arange(0, BLOCK_K)
        w = tl.load(w_rows + ks[None, :], mask=col_ok[:, None] & (ks < K)[None, :], other=0.0)
        enter(PDL)
        x = tl.load(x_ptr + rows * stride_xm + ks, mask=ks < K, other=0.0)
        partial = w.to(tl.float32) * x.to(tl.float32)[None, :]
        for k0 in range(BLOCK_K, K, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            x = tl.load(x_ptr + rows * stride_xm + ks, mask=ks < K, other=0.0)
            w = tl.load(w_rows + ks[None, :], mask=col_ok[:, None] & (ks < K)[None, :], other=0.0)
            partial += w.to(tl.float32) * x.to(tl.float32)[None, :]
        acc = tl.sum(partial, 1)[None, :]
    else:
        enter(PDL)
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            k_ok = ks < K
            x = tl.load(
                x_ptr + rows[:, None] * stride_xm + ks[None, :],
                mask=row_ok[:, None] & k_ok[None, :],
                other=0.0,
            )
            w = tl.load(w_rows + ks[None, :], mask=col_ok[:, None] & k_ok[None, :], other=0.0)
            acc = tl.dot(x, tl.trans(w.to(x.dtype)), acc)
    acc *= tl.load(w_scale_ptr + cols, mask=col_ok, other=0.0)[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(
        out_ptr + rows[:, None] * stride_om + cols[None, :],
        acc.to(out_ptr.dtype.element_ty),
        mask=row_ok[:, None] & col_ok[None, :],
    )


@dataclass(frozen=True)
class Tiles:
    block_m: int  # 1: one row on the CUDA cores; 16: up to 16 rows a tile on the tensor cores
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int


# The fastest of a sweep over Llama-3.1-8B's four layer shapes on an H200 (bench/fp8_layers.py).
ONE_ROW = Tiles(block_m=1, block_n=8, block_k=1024, num_warps=4, num_stages=2)
FEW_ROWS = Tiles(block_m=16, block_n=32, block_k=256, num_warps=4, num_stages=3)


def weight_only_matmul(
    x: torch.Tensor,  # [M, K] bf16 or fp16, M small
    weight: torch.Tensor,  # [N, K] FP8
    weight_scale: torch.Tensor,  # [N] float32: column n of the result is scaled by it
    bias: torch.Tensor | None,
    tiles: Tiles | None = None,
) -> torch.Tensor:
    """x @ (weight * weight_scale[:, None]).T + bias, the weights dequantized in registers.
    Every weight is read once per 16 rows of x: made for batches of a few rows."""
    m, k = x.shape
    n = weight.shape[0]
    if x.stride(1) != 1 or weight.stride(1) != 1:
        raise ValueError("weight_only_matmul needs rows with contiguous elements")
    tiles = tiles or (ONE_ROW if m == 1 else FEW_ROWS)
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(n, tiles.block_n), triton.cdiv(m, tiles.block_m))
    _weight_only_kernel[grid](
        x, weight, weight_scale, bias if bias is not None else weight_scale, out, m, n, k,
        x.stride(0), weight.stride(0), out.stride(0),
        HAS_BIAS=bias is not None, BLOCK_M=tiles.block_m, BLOCK_N=tiles.block_n,
        BLOCK_K=tiles.block_k, num_warps=tiles.num_warps, num_stages=tiles.num_stages,
        **pdl_args(x.device),
    )  # fmt: skip
    return out
