"""Attention over the paged KV cache: the metadata every backend reads, and the backend interface.

A step's tokens arrive flattened: sequence b owns query rows
query_start_loc[b]:query_start_loc[b+1] and, after this step, has seq_lens[b] tokens of context
whose KV lives in the blocks block_tables[b]. Decodes (one query token) come first in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from pagoda_worker.layers.rotary import RotaryEmbedding


@dataclass(frozen=True)
class KVScales:
    """An FP8 KV cache holds k / k_scale and v / v_scale (one scale per layer, from the
    checkpoint or 1.0); a cache in the model's dtype holds K and V as they are."""

    k: float = 1.0
    v: float = 1.0


@dataclass
class AttentionMetadata:
    slot_mapping: torch.Tensor  # [T] int32: block * block_size + offset; -1 = padding
    query_start_loc: torch.Tensor  # [B + 1] int32
    seq_lens: torch.Tensor  # [B] int32: context length including this step's tokens
    block_tables: torch.Tensor  # [B, max_blocks] int32
    max_query_len: int
    max_seq_len: int
    num_decodes: int  # the first num_decodes sequences have exactly one query token

    @property
    def num_seqs(self) -> int:
        return self.seq_lens.shape[0]


class AttentionBackend(Protocol):
    """Rotates q and k to their positions, writes this step's K/V into the layer's cache, then
    attends causally over the context."""

    graph_safe: bool  # launches depend only on host metadata: a decode step can be graph-captured

    def forward(
        self,
        q: torch.Tensor,  # [T, Hq, D]
        k: torch.Tensor,  # [T, Hkv, D]
        v: torch.Tensor,  # [T, Hkv, D]
        positions: torch.Tensor,  # [T]
        kv_cache: torch.Tensor,  # [2, num_blocks, block_size, Hkv, D]
        meta: AttentionMetadata,
        rotary: RotaryEmbedding,
        scale: float,
        kv_scales: KVScales,
    ) -> torch.Tensor:  # [T, Hq, D]
        ...


FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max


def to_cache(x: torch.Tensor, cache_dtype: torch.dtype, scale: float) -> torch.Tensor:
    if cache_dtype != FP8:
        return x
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)


def from_cache(x: torch.Tensor, dtype: torch.dtype, scale: float) -> torch.Tensor:
    return x if x.dtype != FP8 else (x.float() * scale).to(dtype)


def write_kv(k, v, kv_cache: torch.Tensor, slots: torch.Tensor, kv_scales: KVScales) -> None:
    num_kv_heads, head_dim = k.shape[1], k.shape[2]
    kv_cache[0].view(-1, num_kv_heads, head_dim)[slots] = to_cache(k, kv_cache.dtype, kv_scales.k)
    kv_cache[1].view(-1, num_kv_heads, head_dim)[slots] = to_cache(v, kv_cache.dtype, kv_scales.v)


class ReferenceAttention:
    """Plain PyTorch: gather each sequence's context into a padded batch and run SDPA with a mask.

    Runs on any device; it is the definition the Triton kernels are tested against.
    """

    graph_safe = False  # sizes its work from device values

    def forward(
        self, q, k, v, positions, kv_cache, meta: AttentionMetadata, rotary: RotaryEmbedding,
        scale: float, kv_scales: KVScales,
    ) -> torch.Tensor:  # fmt: skip
        q, k = rotary(positions, q, k)
        write_kv(k, v, kv_cache, meta.slot_mapping, kv_scales)
        num_seqs, block_size = meta.num_seqs, kv_cache.shape[2]
        num_heads, head_dim = q.shape[1], q.shape[2]
        device = q.device

        # Which sequence and which row within it each query token is.
        starts = meta.query_start_loc.long()
        query_lens = starts[1:] - starts[:-1]
        seq_of_token = torch.repeat_interleave(torch.arange(num_seqs, device=device), query_lens)
        row_of_token = torch.arange(q.shape[0], device=device) - starts[seq_of_token]

        padded_q = q.new_zeros(num_seqs, meta.max_query_len, num_heads, head_dim)
        padded_q[seq_of_token, row_of_token] = q

        num_blocks = -(-meta.max_seq_len // block_size)
        tables = meta.block_tables[:, :num_blocks].long()
        context_len = num_blocks * block_size
        keys = kv_cache[0][tables].reshape(num_seqs, context_len, -1, head_dim)
        values = kv_cache[1][tables].reshape(num_seqs, context_len, -1, head_dim)
        keys, values = (
            from_cache(keys, q.dtype, kv_scales.k),
            from_cache(values, q.dtype, kv_scales.v),
        )

        # Query row i of sequence b sits at position seq_len - query_len + i and sees keys up to it.
        seq_lens = meta.seq_lens.long()
        query_pos = (seq_lens - query_lens)[:, None] + torch.arange(
            meta.max_query_len, device=device
        )
        key_pos = torch.arange(context_len, device=device)
        mask = key_pos[None, None, :] <= query_pos[:, :, None]
        mask[:, :, 0] = True  # padding rows see one key instead of none, so they stay finite

        out = torch.nn.functional.scaled_dot_product_attention(
            padded_q.transpose(1, 2),
            keys.transpose(1, 2),
            values.transpose(1, 2),
            attn_mask=mask[:, None],
            scale=scale,
            enable_gqa=True,
        )
        return out.transpose(1, 2)[seq_of_token, row_of_token]
