"""Rotary embedding applied in place to q and k, with the cos/sin tables gathered by position."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rotate(x_ptr, stride_t, stride_h, token, cos, sin,
            NUM_HEADS: tl.constexpr, HALF: tl.constexpr, H_PAD: tl.constexpr,
            HALF_PAD: tl.constexpr):  # fmt: skip
    heads = tl.arange(0, H_PAD)
    dims = tl.arange(0, HALF_PAD)
    mask = (heads[:, None] < NUM_HEADS) & (dims[None, :] < HALF)
    first = x_ptr + token * stride_t + heads[:, None] * stride_h + dims[None, :]
    x1 = tl.load(first, mask=mask, other=0.0)
    x2 = tl.load(first + HALF, mask=mask, other=0.0)
    dtype = x1.dtype
    x1 = x1.to(tl.float32)
    x2 = x2.to(tl.float32)
    # x * cos + rotate_half(x) * sin, each product rounded to the activation dtype as in PyTorch.
    y1 = _round(x1 * cos, dtype) - _round(x2 * sin, dtype)
    y2 = _round(x2 * cos, dtype) + _round(x1 * sin, dtype)
    tl.store(first, y1.to(dtype), mask=mask)
    tl.store(first + HALF, y2.to(dtype), mask=mask)


@triton.jit
def _round(x, dtype: tl.constexpr):
    return x.to(dtype).to(tl.float32)


@triton.jit
def _rotary_kernel(
    q_ptr, k_ptr, cos_ptr, sin_ptr, positions_ptr,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_table,
    NUM_Q_HEADS: tl.constexpr, NUM_K_HEADS: tl.constexpr, HALF: tl.constexpr,
    QH_PAD: tl.constexpr, KH_PAD: tl.constexpr, HALF_PAD: tl.constexpr,
):  # fmt: skip
    token = tl.program_id(0).to(tl.int64)
    position = tl.load(positions_ptr + token).to(tl.int64)
    dims = tl.arange(0, HALF_PAD)
    # The tables repeat their first half (cat(freqs, freqs)): the first half is all we need.
    cos = tl.load(cos_ptr + position * stride_table + dims, mask=dims < HALF, other=0.0)
    sin = tl.load(sin_ptr + position * stride_table + dims, mask=dims < HALF, other=0.0)
    # The tables are cast to the activation dtype first, as in PyTorch; the math runs in fp32.
    dtype = q_ptr.dtype.element_ty
    cos = cos.to(dtype).to(tl.float32)[None, :]
    sin = sin.to(dtype).to(tl.float32)[None, :]
    _rotate(q_ptr, stride_qt, stride_qh, token, cos, sin, NUM_Q_HEADS, HALF, QH_PAD, HALF_PAD)
    _rotate(k_ptr, stride_kt, stride_kh, token, cos, sin, NUM_K_HEADS, HALF, KH_PAD, HALF_PAD)


def apply_rotary_(
    q: torch.Tensor,  # [T, Hq, D], rotated in place
    k: torch.Tensor,  # [T, Hkv, D], rotated in place
    cos: torch.Tensor,  # [max_position, D] float32
    sin: torch.Tensor,
    positions: torch.Tensor,  # [T]
) -> None:
    num_tokens, num_q_heads, head_dim = q.shape
    num_k_heads = k.shape[1]
    if q.stride(2) != 1 or k.stride(2) != 1 or cos.stride(1) != 1 or head_dim % 2:
        raise ValueError("rotary needs an even, contiguous head dimension")
    if num_tokens == 0:
        return
    half = head_dim // 2
    _rotary_kernel[(num_tokens,)](
        q, k, cos, sin, positions,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), cos.stride(0),
        NUM_Q_HEADS=num_q_heads, NUM_K_HEADS=num_k_heads, HALF=half,
        QH_PAD=triton.next_power_of_2(num_q_heads), KH_PAD=triton.next_power_of_2(num_k_heads),
        HALF_PAD=triton.next_power_of_2(half),
    )  # fmt: skip
