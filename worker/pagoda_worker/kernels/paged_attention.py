"""Triton attention over the paged KV cache: decode (split-KV) and prefill (varlen, causal).

The cache of one layer is [2, num_blocks, block_size, Hkv, D]; a sequence's token at position p
lives in block block_tables[seq, p // block_size] at offset p % block_size. Both kernels gather
KV token by token through the block table, so any block size works, and GQA is handled by giving
one program all the query heads that share a KV head: each K/V tile is loaded once per group.

An FP8 cache is read as k * k_scale and v * v_scale: k_scale is folded into the score scale,
v_scale applied to the output, and the tiles converted to the query's dtype in registers.

Scores use exp2 with log2(e) folded into the scale. Matrix products run on the tensor cores for
bf16/fp16; float32 inputs use IEEE fp32 products (no tf32), for exactness tests.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from pagoda_worker.kernels.pdl import enter, pdl_args

LOG2E = 1.4426950408889634
DECODE_BLOCK_N = 64
MAX_SPLITS = 16


@triton.jit
def _attend_span(
    q, acc, m_i, l_i, query_pos, k_cache_ptr, v_cache_ptr, table, kv_head, start, end, qk_scale,
    stride_kb, stride_kt, stride_kh,
    BLOCK_SIZE: tl.constexpr, D_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """Online softmax of the query rows `q` over the cached keys at positions [start, end),
    each row seeing the keys up to its query_pos; returns the updated (acc, m_i, l_i)."""
    dims = tl.arange(0, D_PAD)
    dim_ok = dims < HEAD_DIM
    for n0 in range(start, end, BLOCK_N):
        pos = n0 + tl.arange(0, BLOCK_N)
        pos_ok = pos < end
        block = tl.load(table + pos // BLOCK_SIZE, mask=pos_ok, other=0).to(tl.int64)
        offsets = block * stride_kb + (pos % BLOCK_SIZE) * stride_kt + kv_head * stride_kh
        kv_mask = pos_ok[:, None] & dim_ok[None, :]
        k = tl.load(k_cache_ptr + offsets[:, None] + dims[None, :], mask=kv_mask, other=0.0)
        k = k.to(q.dtype)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        visible = pos_ok[None, :] & (pos[None, :] <= query_pos[:, None])
        s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_cache_ptr + offsets[:, None] + dims[None, :], mask=kv_mask, other=0.0)
        v = v.to(q.dtype)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    return acc, m_i, l_i


# Triton compiles a variant per integer argument that is 1 or a multiple of 16; the block-table
# width (eager steps) and the first prefill sequence change every step: no variants for them.
@triton.jit(do_not_specialize=["stride_bt"])
def _decode_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, seq_lens_ptr,
    out_ptr, part_acc_ptr, part_m_ptr, part_l_ptr,
    qk_scale, v_scale,
    stride_qt, stride_qh, stride_kb, stride_kt, stride_kh, stride_bt, stride_ot, stride_oh,
    BLOCK_SIZE: tl.constexpr, GROUP: tl.constexpr, GROUP_PAD: tl.constexpr,
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, BLOCK_N: tl.constexpr,
    NUM_SPLITS: tl.constexpr, PRECISION: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    enter(PDL)
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    seq_len = tl.load(seq_lens_ptr + seq)
    per_split = tl.cdiv(tl.cdiv(seq_len, NUM_SPLITS), BLOCK_N) * BLOCK_N
    start = split * per_split
    end = tl.minimum(start + per_split, seq_len)

    rows = tl.arange(0, GROUP_PAD)
    dims = tl.arange(0, D_PAD)
    heads = kv_head * GROUP + rows
    row_ok = rows < GROUP
    dim_ok = dims < HEAD_DIM
    q = tl.load(
        q_ptr + seq * stride_qt + heads[:, None] * stride_qh + dims[None, :],
        mask=row_ok[:, None] & dim_ok[None, :],
        other=0.0,
    )
    m_i = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, D_PAD], tl.float32)
    query_pos = tl.full([GROUP_PAD], seq_len - 1, tl.int32)  # the query is the last token
    acc, m_i, l_i = _attend_span(
        q, acc, m_i, l_i, query_pos, k_cache_ptr, v_cache_ptr, block_tables_ptr + seq * stride_bt,
        kv_head, start, end, qk_scale, stride_kb, stride_kt, stride_kh,
        BLOCK_SIZE, D_PAD, HEAD_DIM, BLOCK_N, PRECISION,
    )  # fmt: skip

    acc *= v_scale
    if NUM_SPLITS == 1:
        out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]  # an empty sequence (padding) gives 0
        out_ptrs = out_ptr + seq * stride_ot + heads[:, None] * stride_oh + dims[None, :]
        tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & dim_ok[None, :])
    else:
        # Partials [seq, head, split, ...]: unnormalised accumulator, running max and sum.
        part = (seq * GROUP * tl.num_programs(1) + heads) * NUM_SPLITS + split
        tl.store(part_m_ptr + part, m_i, mask=row_ok)
        tl.store(part_l_ptr + part, l_i, mask=row_ok)
        acc_ptrs = part_acc_ptr + part[:, None] * HEAD_DIM + dims[None, :]
        tl.store(acc_ptrs, acc, mask=row_ok[:, None] & dim_ok[None, :])


@triton.jit
def _combine_splits_kernel(
    part_acc_ptr, part_m_ptr, part_l_ptr, out_ptr, stride_ot, stride_oh,
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, NUM_SPLITS: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    enter(PDL)
    seq = tl.program_id(0)
    head = tl.program_id(1)
    base = (seq * tl.num_programs(1) + head) * NUM_SPLITS
    splits = tl.arange(0, NUM_SPLITS)
    dims = tl.arange(0, D_PAD)
    m_i = tl.load(part_m_ptr + base + splits)
    l_i = tl.load(part_l_ptr + base + splits)
    m_max = tl.max(m_i, 0)
    m_max = tl.where(m_max == float("-inf"), 0.0, m_max)  # every split empty
    weight = tl.exp2(m_i - m_max)
    denominator = tl.sum(weight * l_i, 0)
    denominator = tl.where(denominator == 0.0, 1.0, denominator)
    acc = tl.load(
        part_acc_ptr + (base + splits)[:, None] * HEAD_DIM + dims[None, :],
        mask=dims[None, :] < HEAD_DIM,
        other=0.0,
    )
    out = tl.sum(acc * weight[:, None], 0) / denominator
    out_ptrs = out_ptr + seq * stride_ot + head * stride_oh + dims
    tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=dims < HEAD_DIM)


@triton.jit(do_not_specialize=["first_seq", "stride_bt"])
def _prefill_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, query_start_loc_ptr, seq_lens_ptr, out_ptr,
    qk_scale, v_scale, first_seq,
    stride_qt, stride_qh, stride_kb, stride_kt, stride_kh, stride_bt, stride_ot, stride_oh,
    BLOCK_SIZE: tl.constexpr, GROUP: tl.constexpr, GROUP_PAD: tl.constexpr,
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    enter(PDL)
    # Rows of the tile are (query token, head of the group) pairs: BLOCK_Q tokens x GROUP_PAD.
    seq = first_seq + tl.program_id(0)
    tile = tl.program_id(1)
    kv_head = tl.program_id(2)
    q_start = tl.load(query_start_loc_ptr + seq)
    q_len = tl.load(query_start_loc_ptr + seq + 1) - q_start
    seq_len = tl.load(seq_lens_ptr + seq)
    context = seq_len - q_len  # tokens before this step's first query token

    rows = tl.arange(0, BLOCK_Q * GROUP_PAD)
    token = tile * BLOCK_Q + rows // GROUP_PAD
    group_row = rows % GROUP_PAD
    heads = kv_head * GROUP + group_row
    row_ok = (token < q_len) & (group_row < GROUP)
    dims = tl.arange(0, D_PAD)
    dim_ok = dims < HEAD_DIM
    q_offsets = (q_start + token).to(tl.int64) * stride_qt + heads * stride_qh
    q = tl.load(
        q_ptr + q_offsets[:, None] + dims[None, :],
        mask=row_ok[:, None] & dim_ok[None, :],
        other=0.0,
    )
    query_pos = context + token

    # Tiles past the sequence's queries do no work; keys beyond the tile's last query are masked.
    end = tl.where(tile * BLOCK_Q < q_len, tl.minimum(seq_len, context + (tile + 1) * BLOCK_Q), 0)
    m_i = tl.full([BLOCK_Q * GROUP_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_Q * GROUP_PAD], tl.float32)
    acc = tl.zeros([BLOCK_Q * GROUP_PAD, D_PAD], tl.float32)
    acc, m_i, l_i = _attend_span(
        q, acc, m_i, l_i, query_pos, k_cache_ptr, v_cache_ptr, block_tables_ptr + seq * stride_bt,
        kv_head, 0, end, qk_scale, stride_kb, stride_kt, stride_kh,
        BLOCK_SIZE, D_PAD, HEAD_DIM, BLOCK_N, PRECISION,
    )  # fmt: skip

    out = acc * v_scale / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    out_offsets = (q_start + token).to(tl.int64) * stride_ot + heads * stride_oh
    tl.store(
        out_ptr + out_offsets[:, None] + dims[None, :],
        out.to(out_ptr.dtype.element_ty),
        mask=row_ok[:, None] & dim_ok[None, :],
    )


def _precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


def _shapes(q: torch.Tensor, k_cache: torch.Tensor) -> tuple[int, int, int]:
    """(group size, padded group size, padded head dim) for the tiles."""
    num_heads, head_dim = q.shape[1], q.shape[2]
    num_kv_heads = k_cache.shape[2]
    if num_heads % num_kv_heads:
        raise ValueError(f"{num_heads} query heads do not divide into {num_kv_heads} KV heads")
    if q.stride(2) != 1 or k_cache.stride(3) != 1:
        raise ValueError("q and the KV cache need a contiguous head dimension")
    group = num_heads // num_kv_heads
    return group, triton.next_power_of_2(group), max(16, triton.next_power_of_2(head_dim))


def decode_num_splits(num_seqs: int, num_kv_heads: int, max_seq_len: int, num_sms: int) -> int:
    """Split each sequence's context when there are too few (sequence, KV head) programs to fill
    the GPU, but never into pieces shorter than one tile."""
    wanted = triton.cdiv(2 * num_sms, num_seqs * num_kv_heads)
    useful = triton.cdiv(max_seq_len, DECODE_BLOCK_N)
    return max(1, min(MAX_SPLITS, triton.next_power_of_2(wanted), triton.next_power_of_2(useful)))


def paged_decode_attention(
    q: torch.Tensor,  # [B, Hq, D]: one query token per sequence
    k_cache: torch.Tensor,  # [num_blocks, block_size, Hkv, D]
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,  # [B, max_blocks] int32
    seq_lens: torch.Tensor,  # [B] int32, including the query token
    scale: float,
    out: torch.Tensor,  # [B, Hq, D]
    num_splits: int,
    k_scale: float = 1.0,  # FP8 caches only
    v_scale: float = 1.0,
) -> None:
    num_seqs, num_heads, head_dim = q.shape
    if num_seqs == 0:
        return
    group, group_pad, d_pad = _shapes(q, k_cache)
    num_kv_heads = k_cache.shape[2]
    if num_splits > 1:
        part_acc = torch.empty(
            num_seqs, num_heads, num_splits, head_dim, dtype=torch.float32, device=q.device
        )
        part_m = torch.empty(num_seqs, num_heads, num_splits, dtype=torch.float32, device=q.device)
        part_l = torch.empty_like(part_m)
    else:
        part_acc = part_m = part_l = out  # unused
    _decode_kernel[(num_seqs, num_kv_heads, num_splits)](
        q, k_cache, v_cache, block_tables, seq_lens, out, part_acc, part_m, part_l,
        scale * k_scale * LOG2E, v_scale,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        block_tables.stride(0), out.stride(0), out.stride(1),
        BLOCK_SIZE=k_cache.shape[1], GROUP=group, GROUP_PAD=max(16, group_pad),
        HEAD_DIM=head_dim, D_PAD=d_pad, BLOCK_N=DECODE_BLOCK_N, NUM_SPLITS=num_splits,
        PRECISION=_precision(q.dtype), num_warps=4, num_stages=2, **pdl_args(q.device),
    )  # fmt: skip
    if num_splits > 1:
        _combine_splits_kernel[(num_seqs, num_heads)](
            part_acc, part_m, part_l, out, out.stride(0), out.stride(1),
            HEAD_DIM=head_dim, D_PAD=d_pad, NUM_SPLITS=num_splits, num_warps=1,
            **pdl_args(out.device),
        )  # fmt: skip


def paged_prefill_attention(
    q: torch.Tensor,  # [T, Hq, D]: the step's query tokens, sequences back to back
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    query_start_loc: torch.Tensor,  # [B + 1] int32
    seq_lens: torch.Tensor,
    scale: float,
    out: torch.Tensor,
    first_seq: int,  # sequences first_seq..B-1 are computed
    max_query_len: int,
    k_scale: float = 1.0,  # FP8 caches only
    v_scale: float = 1.0,
) -> None:
    num_seqs = seq_lens.shape[0] - first_seq
    if num_seqs <= 0:
        return
    group, group_pad, d_pad = _shapes(q, k_cache)
    num_kv_heads = k_cache.shape[2]
    rows = 128 if d_pad <= 128 else 64
    block_q = max(1, rows // group_pad)
    block_n = 64 if d_pad <= 128 else 32
    grid = (num_seqs, triton.cdiv(max_query_len, block_q), num_kv_heads)
    _prefill_kernel[grid](
        q, k_cache, v_cache, block_tables, query_start_loc, seq_lens, out,
        scale * k_scale * LOG2E, v_scale, first_seq,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        block_tables.stride(0), out.stride(0), out.stride(1),
        BLOCK_SIZE=k_cache.shape[1], GROUP=group, GROUP_PAD=group_pad, HEAD_DIM=q.shape[2],
        D_PAD=d_pad, BLOCK_Q=block_q, BLOCK_N=block_n, PRECISION=_precision(q.dtype),
        num_warps=8 if d_pad >= 128 else 4, num_stages=2, **pdl_args(q.device),
    )  # fmt: skip
