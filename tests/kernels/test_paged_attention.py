"""Triton paged attention against the reference backend, on random caches and odd shapes."""

from __future__ import annotations

import random

import pytest
import torch
from kernel_checks import INTERPRETED, TOLERANCE, relative_error
from transformers import LlamaConfig

pytest.importorskip("triton", reason="Triton is not installed")

from pagoda_worker.kernels.paged_attention import paged_decode_attention
from pagoda_worker.layers.attention import FP8, AttentionMetadata, KVScales, ReferenceAttention
from pagoda_worker.layers.rotary import RotaryEmbedding
from pagoda_worker.layers.triton_attention import TritonAttention


def make_step(
    device, context_query: list[tuple[int, int]], heads: tuple[int, int, int], block_size: int,
    dtype: torch.dtype, seed: int,
):  # fmt: skip
    """A step over sequences (cached prefix length, new tokens); decodes must come first.
    Blocks are scattered at random over a cache with spare blocks; the prefix KV is random."""
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    num_heads, num_kv_heads, head_dim = heads
    seq_lens = [c + q for c, q in context_query]
    blocks_per_seq = [-(-n // block_size) for n in seq_lens]
    num_blocks = sum(blocks_per_seq) + 3
    order = list(range(num_blocks))
    rng.shuffle(order)
    tables, slots, start = [], [], 0
    width = max(blocks_per_seq)
    for (context, query), count in zip(context_query, blocks_per_seq, strict=True):
        table = order[start : start + count]
        start += count
        slots += [
            table[p // block_size] * block_size + p % block_size
            for p in range(context, context + query)
        ]
        tables.append(table + [0] * (width - count))
    num_tokens = sum(q for _, q in context_query)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(dtype).to(device)

    cache = rand(2, num_blocks, block_size, num_kv_heads, head_dim)
    qkv = rand(num_tokens, (num_heads + 2 * num_kv_heads) * head_dim)
    q, k, v = qkv.split(
        [num_heads * head_dim, num_kv_heads * head_dim, num_kv_heads * head_dim], -1
    )
    q = q.view(num_tokens, num_heads, head_dim)  # strided views, as the model passes them
    k = k.view(num_tokens, num_kv_heads, head_dim)
    v = v.view(num_tokens, num_kv_heads, head_dim)
    query_lens = [q for _, q in context_query]
    single = [n == 1 for n in query_lens]
    num_decodes = single.index(False) if False in single else len(single)

    def i32(values):
        return torch.tensor(values, dtype=torch.int32, device=device)

    meta = AttentionMetadata(
        slot_mapping=i32(slots),
        query_start_loc=i32([0, *torch.tensor(query_lens).cumsum(0).tolist()]),
        seq_lens=i32(seq_lens),
        block_tables=i32(tables),
        max_query_len=max(query_lens),
        max_seq_len=max(seq_lens),
        num_decodes=num_decodes,
    )
    return q, k, v, cache, meta


def at_position_zero(q: torch.Tensor) -> tuple[torch.Tensor, RotaryEmbedding]:
    """Backends rotate q and k first. At position 0 that is exactly the identity, so caches can
    be compared bit for bit (test_fused_layers.py checks the rotation itself)."""
    config = LlamaConfig(rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    rotary = RotaryEmbedding(config, head_dim=q.shape[2], max_position=1).to(q.device)
    return torch.zeros(q.shape[0], dtype=torch.int32, device=q.device), rotary


def triton_forward(q, k, v, cache, meta, scale, kv_scales: KVScales) -> torch.Tensor:
    positions, rotary = at_position_zero(q)
    backend = TritonAttention(num_sms(q.device))
    return backend.forward(q, k, v, positions, cache, meta, rotary, scale, kv_scales)


def reference(q, k, v, cache, meta, scale, kv_scales: KVScales | None = None):
    """The reference backend in float64 on the CPU (an FP8 cache stays FP8)."""
    cpu = AttentionMetadata(**{
        name: value.cpu().long() if isinstance(value, torch.Tensor) else value
        for name, value in vars(meta).items()
    })  # fmt: skip
    cache64 = cache.cpu() if cache.dtype == FP8 else cache.cpu().double()
    q64 = q.cpu().double()
    positions, rotary = at_position_zero(q64)
    out = ReferenceAttention().forward(
        q64, k.cpu().double(), v.cpu().double(), positions, cache64, cpu, rotary, scale,
        kv_scales or KVScales(),
    )  # fmt: skip
    return out, cache64


def num_sms(device) -> int:
    return (
        torch.cuda.get_device_properties(device).multi_processor_count
        if device.type == "cuda"
        else 4
    )


STEPS = {
    "decodes at block boundaries": [(0, 1), (14, 1), (15, 1), (16, 1), (31, 1), (200, 1)],
    "prefills from scratch": [(0, 1), (0, 15), (0, 16), (0, 17), (0, 100)],
    "chunks over cached prefixes": [(16, 1), (7, 1), (32, 17), (5, 64), (48, 3), (1, 33)],
    "long decode": [(1500, 1), (700, 1)],
}
HEADS = {"gqa4 d128": (8, 2, 128), "mha d8": (4, 4, 8), "gqa3 d80": (6, 2, 80)}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("heads", HEADS.values(), ids=HEADS.keys())
@pytest.mark.parametrize("block_size", [16, 5])
@pytest.mark.parametrize("step", STEPS.values(), ids=STEPS.keys())
def test_backend_matches_reference(device, step, block_size, heads, dtype):
    if INTERPRETED and dtype == torch.bfloat16:
        pytest.skip("Triton's interpreter computes bf16 dots on raw bits")
    q, k, v, cache, meta = make_step(
        device, step, heads, block_size, dtype, seed=len(step) + block_size
    )
    scale = heads[2] ** -0.5
    expected, expected_cache = reference(q, k, v, cache, meta, scale)
    out = triton_forward(q, k, v, cache, meta, scale, KVScales())
    assert torch.equal(cache.cpu().double(), expected_cache), "the KV-cache write differs"
    assert relative_error(out.cpu(), expected) < TOLERANCE[dtype]


@pytest.mark.parametrize("num_splits", [1, 2, 16])
def test_decode_splits_and_poisoned_output(device, num_splits):
    """Every split count gives the same answer and writes every element of the output."""
    dtype = torch.float16 if INTERPRETED else torch.bfloat16  # the interpreter lacks bf16 dots
    heads = (32, 8, 128)
    step = [(0, 1), (63, 1), (64, 1), (65, 1), (1000, 1), (3, 1), (129, 1)]
    q, k, v, cache, meta = make_step(device, step, heads, 16, dtype, seed=num_splits)
    scale = 128**-0.5
    expected, expected_cache = reference(q, k, v, cache, meta, scale)
    cache.copy_(expected_cache.to(cache))  # the reference wrote this step's K/V
    out = torch.full(q.shape, float("nan"), dtype=q.dtype, device=device)
    paged_decode_attention(
        q, cache[0], cache[1], meta.block_tables, meta.seq_lens, scale, out, num_splits
    )
    assert not out.isnan().any()
    assert relative_error(out.cpu(), expected) < TOLERANCE[dtype]


def test_padding_rows_write_nothing_and_read_nothing(device):
    """CUDA-graph padding: slot -1 and length 0 leave the cache alone and give zeros."""
    q, k, v, cache, meta = make_step(device, [(9, 1), (0, 1)], (4, 2, 16), 4, torch.float32, seed=3)
    meta.slot_mapping[1] = -1
    meta.seq_lens[1] = 0
    before = cache.clone()
    out = triton_forward(q, k, v, cache, meta, 0.25, KVScales())
    changed = (cache != before).any(dim=(0, 3, 4)).nonzero().tolist()
    table = meta.block_tables[0].tolist()
    assert changed == [[table[2], 1]], "only the real token's slot (position 9) is written"
    assert torch.equal(out[1], torch.zeros_like(out[1]))


@pytest.mark.parametrize(
    "step", ["prefills from scratch", "chunks over cached prefixes", "long decode"]
)
def test_fp8_cache_matches_reference(device, step):
    """The write stores k / k_scale and v / v_scale as FP8, bit for bit as PyTorch rounds them
    (power-of-two scales divide exactly), and attention reads them back scaled."""
    dtype = torch.float16 if INTERPRETED else torch.bfloat16
    q, k, v, cache, meta = make_step(device, STEPS[step], (8, 2, 128), 16, dtype, seed=11)
    cache = (cache.float() * 4).to(FP8)  # a random cached prefix, already quantized
    kv_scales, scale = KVScales(k=0.5, v=2.0), 128**-0.5
    expected, expected_cache = reference(q, k, v, cache, meta, scale, kv_scales)
    out = triton_forward(q, k, v, cache, meta, scale, kv_scales)
    assert torch.equal(cache.cpu().view(torch.uint8), expected_cache.view(torch.uint8))
    assert relative_error(out.cpu(), expected) < TOLERANCE[dtype]
    bf16_out, _ = reference(q, k, v, cache.float().to(dtype), meta, scale)
    assert relative_error(out.cpu(), bf16_out) > 1e-3, "the scales must change the answer"
