"""The CUDA attention backend: the Triton paged kernels, after one launch that applies the
rotary embedding and writes the step's K/V into the cache."""

from __future__ import annotations

import torch

from pagoda_worker.kernels.paged_attention import (
    decode_num_splits,
    paged_decode_attention,
    paged_prefill_attention,
)
from pagoda_worker.kernels.rotary import rotate_and_cache
from pagoda_worker.layers.attention import AttentionMetadata, KVScales
from pagoda_worker.layers.rotary import RotaryEmbedding


class TritonAttention:
    """Decodes (the batch's leading one-token sequences) go to the split-KV decode kernel, the
    rest (prefills, chunks over a cached prefix) to the varlen prefill kernel. Every launch's
    size comes from host-side metadata, so a decode step can be captured in a CUDA graph."""

    graph_safe = True

    def __init__(self, num_sms: int) -> None:
        self.num_sms = num_sms  # decode splits long contexts until the SMs are busy

    def forward(
        self, q, k, v, positions, kv_cache, meta: AttentionMetadata, rotary: RotaryEmbedding,
        scale: float, kv_scales: KVScales,
    ) -> torch.Tensor:  # fmt: skip
        k_cache, v_cache = kv_cache[0], kv_cache[1]
        rotate_and_cache(
            q, k, v, positions, rotary.cos, rotary.sin, k_cache, v_cache, meta.slot_mapping,
            kv_scales.k, kv_scales.v,
        )  # fmt: skip
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        decodes = meta.num_decodes
        if decodes:
            splits = decode_num_splits(decodes, k_cache.shape[2], meta.max_seq_len, self.num_sms)
            paged_decode_attention(
                q[:decodes], k_cache, v_cache, meta.block_tables[:decodes],
                meta.seq_lens[:decodes], scale, out[:decodes], splits, kv_scales.k, kv_scales.v,
            )  # fmt: skip
        if decodes < meta.num_seqs:
            paged_prefill_attention(
                q, k_cache, v_cache, meta.block_tables, meta.query_start_loc, meta.seq_lens,
                scale, out, first_seq=decodes, max_query_len=meta.max_query_len,
                k_scale=kv_scales.k, v_scale=kv_scales.v,
            )  # fmt: skip
        return out
