"""A step's rotary embedding and KV-cache write in one launch: q is rotated in place, k is
rotated on its way into the paged cache, v is copied there. An FP8 cache stores k / k_scale and
v / v_scale, saturated to FP8's range."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from pagoda_worker.kernels.pdl import enter, pdl_args


@triton.jit
def _round(x, dtype: tl.constexpr):
    return x.to(dtype).to(tl.float32)


@triton.jit
def _to_cache(x, scale, cache_ptr, FP8: tl.constexpr):
    """x (activation dtype) as the cache stores it."""
    if FP8:
        x = tl.clamp(x.to(tl.float32) / scale, -448.0, 448.0)
    return x.to(cache_ptr.dtype.element_ty)


@triton.jit
def _rotate(src, dst, load_mask, store_mask, cos, sin, scale, HALF: tl.constexpr,
            FP8: tl.constexpr):  # fmt: skip
    """Rotates the heads whose first halves `src` points at into `dst` (scaled for an FP8 cache:
    `dst` may be the cache, or `src` itself)."""
    x1 = tl.load(src, mask=load_mask, other=0.0)
    x2 = tl.load(src + HALF, mask=load_mask, other=0.0)
    dtype = x1.dtype
    x1 = x1.to(tl.float32)
    x2 = x2.to(tl.float32)
    # x * cos + rotate_half(x) * sin, each product rounded to the activation dtype as in PyTorch.
    y1 = (_round(x1 * cos, dtype) - _round(x2 * sin, dtype)).to(dtype)
    y2 = (_round(x2 * cos, dtype) + _round(x1 * sin, dtype)).to(dtype)
    tl.store(dst, _to_cache(y1, scale, dst, FP8), mask=store_mask)
    tl.store(dst + HALF, _to_cache(y2, scale, dst, FP8), mask=store_mask)


@triton.jit
def _rotate_and_cache_kernel(
    q_ptr, k_ptr, v_ptr, positions_ptr, cos_ptr, sin_ptr, k_cache_ptr, v_cache_ptr, slots_ptr,
    k_scale, v_scale,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_table,
    stride_cache_slot, stride_cache_head,
    NUM_Q_HEADS: tl.constexpr, NUM_KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
    HALF: tl.constexpr,
    QH_PAD: tl.constexpr, KVH_PAD: tl.constexpr, D_PAD: tl.constexpr, HALF_PAD: tl.constexpr,
    FP8: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    enter(PDL)
    token = tl.program_id(0).to(tl.int64)
    position = tl.load(positions_ptr + token).to(tl.int64)
    halves = tl.arange(0, HALF_PAD)
    # The tables repeat their first half (cat(freqs, freqs)): the first half is all we need.
    # They are cast to the activation dtype first, as in PyTorch; the math runs in fp32.
    dtype = q_ptr.dtype.element_ty
    cos = tl.load(cos_ptr + position * stride_table + halves, mask=halves < HALF, other=0.0)
    sin = tl.load(sin_ptr + position * stride_table + halves, mask=halves < HALF, other=0.0)
    cos = cos.to(dtype).to(tl.float32)[None, :]
    sin = sin.to(dtype).to(tl.float32)[None, :]

    q_heads = tl.arange(0, QH_PAD)
    q_mask = (q_heads[:, None] < NUM_Q_HEADS) & (halves[None, :] < HALF)
    q = q_ptr + token * stride_qt + q_heads[:, None] * stride_qh + halves[None, :]
    _rotate(q, q, q_mask, q_mask, cos, sin, 1.0, HALF, False)

    # A negative slot is a padding row (CUDA-graph batches): nothing to write.
    slot = tl.load(slots_ptr + token).to(tl.int64)
    kv_heads = tl.arange(0, KVH_PAD)
    cache_rows = slot * stride_cache_slot + kv_heads[:, None] * stride_cache_head
    k_mask = (kv_heads[:, None] < NUM_KV_HEADS) & (halves[None, :] < HALF)
    k = k_ptr + token * stride_kt + kv_heads[:, None] * stride_kh + halves[None, :]
    _rotate(k, k_cache_ptr + cache_rows + halves[None, :], k_mask, k_mask & (slot >= 0), cos, sin,
            k_scale, HALF, FP8)  # fmt: skip

    dims = tl.arange(0, D_PAD)
    v_mask = (kv_heads[:, None] < NUM_KV_HEADS) & (dims[None, :] < HEAD_DIM) & (slot >= 0)
    v = tl.load(v_ptr + token * stride_vt + kv_heads[:, None] * stride_vh + dims[None, :],
                mask=v_mask)  # fmt: skip
    tl.store(v_cache_ptr + cache_rows + dims[None, :], _to_cache(v, v_scale, v_cache_ptr, FP8),
             mask=v_mask)  # fmt: skip


def rotate_and_cache(
    q: torch.Tensor,  # [T, Hq, D], rotated in place
    k: torch.Tensor,  # [T, Hkv, D], rotated into the cache (k itself is left as it was)
    v: torch.Tensor,  # [T, Hkv, D]
    positions: torch.Tensor,  # [T]
    cos: torch.Tensor,  # [max_position, D] float32, rows cat(freqs, freqs)
    sin: torch.Tensor,
    k_cache: torch.Tensor,  # [num_blocks, block_size, Hkv, D], contiguous
    v_cache: torch.Tensor,
    slots: torch.Tensor,  # [T]: block * block_size + offset, or -1 to skip the token
    k_scale: float = 1.0,  # FP8 caches only
    v_scale: float = 1.0,
) -> None:
    num_tokens, num_q_heads, head_dim = q.shape
    num_kv_heads = k.shape[1]
    if num_tokens == 0:
        return
    if head_dim % 2 or any(t.stride(-1) != 1 for t in (q, k, v, cos)):
        raise ValueError("rotate_and_cache needs an even, contiguous head dimension")
    if not k_cache.is_contiguous():
        raise ValueError("rotate_and_cache needs a contiguous cache")
    _rotate_and_cache_kernel[(num_tokens,)](
        q, k, v, positions, cos, sin, k_cache, v_cache, slots, k_scale, v_scale,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        cos.stride(0), k_cache.stride(1), k_cache.stride(2),
        NUM_Q_HEADS=num_q_heads, NUM_KV_HEADS=num_kv_heads, HEAD_DIM=head_dim, HALF=head_dim // 2,
        QH_PAD=triton.next_power_of_2(num_q_heads), KVH_PAD=triton.next_power_of_2(num_kv_heads),
        D_PAD=triton.next_power_of_2(head_dim), HALF_PAD=triton.next_power_of_2(head_dim // 2),
        FP8=k_cache.dtype == torch.float8_e4m3fn, **pdl_args(q.device),
    )  # fmt: skip
