"""Triton RMSNorm (+ residual), rotary with the KV write, and SiLU-and-mul against PyTorch."""

from __future__ import annotations

import pytest
import torch
from kernel_checks import INTERPRETED, TOLERANCE, relative_error
from transformers import LlamaConfig

pytest.importorskip("triton", reason="Triton is not installed")

from pagoda_worker.kernels.activation import silu_and_mul
from pagoda_worker.kernels.norm import rms_norm
from pagoda_worker.kernels.rotary import rotate_and_cache
from pagoda_worker.layers.norm import RMSNorm
from pagoda_worker.layers.rotary import RotaryEmbedding

DTYPES = [torch.bfloat16, torch.float16, torch.float32]


def rand(device, dtype, *shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype).to(device)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rows,hidden", [(1, 64), (7, 1000), (33, 4096)])
def test_rms_norm_with_and_without_residual(device, dtype, rows, hidden):
    norm = RMSNorm(hidden, 1e-5)
    norm.weight.data = rand("cpu", dtype, hidden, seed=1) + 1.0
    x, residual = (
        rand(device, dtype, rows, hidden, seed=2),
        rand(device, dtype, rows, hidden, seed=3),
    )
    expected = norm(x.cpu())  # the CPU path is the PyTorch definition
    out = rms_norm(x, norm.weight.to(device), 1e-5)
    assert relative_error(out.cpu(), expected) < TOLERANCE[dtype]

    expected, expected_sum = norm(x.cpu(), residual.cpu())
    out, new_residual = rms_norm(x, norm.weight.to(device), 1e-5, residual)
    if not (INTERPRETED and dtype == torch.bfloat16):  # the interpreter truncates to bf16
        assert torch.equal(new_residual.cpu(), expected_sum), "the sum must round as PyTorch's"
    assert relative_error(out.cpu(), expected) < TOLERANCE[dtype]


def rope_config(rope_type: str) -> LlamaConfig:
    rope = {"rope_type": rope_type, "rope_theta": 500000.0}
    if rope_type == "llama3":
        rope.update(
            factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
            original_max_position_embeddings=64,
        )  # fmt: skip
    return LlamaConfig(
        hidden_size=480, num_attention_heads=6, head_dim=80, max_position_embeddings=1024,
        rope_parameters=rope,
    )  # fmt: skip


def scattered_slots(tokens: int, num_slots: int, seed: int) -> torch.Tensor:
    return torch.randperm(num_slots, generator=torch.Generator().manual_seed(seed))[:tokens]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rope_type", ["default", "llama3"])
def test_rotary_turns_q_in_place_and_k_into_the_cache(device, dtype, rope_type):
    rotary = RotaryEmbedding(rope_config(rope_type), head_dim=80, max_position=1024)
    tokens = 37
    qkv = rand(device, dtype, tokens, (6 + 2 * 2) * 80, seed=4)
    q, k, v = (t.view(tokens, -1, 80) for t in qkv.split([6 * 80, 2 * 80, 2 * 80], dim=-1))
    positions = torch.randint(0, 1024, (tokens,), generator=torch.Generator().manual_seed(5))
    expected_q, expected_k = rotary(positions, q.cpu(), k.cpu())
    kv_before = qkv[:, 6 * 80 :].clone()
    cache = torch.zeros(2, 16, 4, 2, 80, dtype=dtype, device=device)
    slots = scattered_slots(tokens, 64, seed=6)
    rotate_and_cache(
        q, k, v, positions.to(device), rotary.cos.to(device), rotary.sin.to(device),
        cache[0], cache[1], slots.to(device, torch.int32),
    )  # fmt: skip
    assert relative_error(q.cpu(), expected_q) < TOLERANCE[dtype]
    cached_k, cached_v = (c.view(-1, 2, 80)[slots].cpu() for c in cache.cpu())
    assert relative_error(cached_k, expected_k) < TOLERANCE[dtype]
    assert torch.equal(cached_v, v.cpu())
    assert torch.equal(qkv[:, 6 * 80 :], kv_before), "k and v themselves stay as they were"


def test_padding_tokens_write_nothing(device):
    """Slot -1 marks a CUDA-graph padding row: its K/V go nowhere. Position 0 rotates by
    nothing, so the written rows are k and v exactly."""
    rotary = RotaryEmbedding(rope_config("default"), head_dim=24, max_position=8)
    cache = rand(device, torch.bfloat16, 2, 6, 4, 3, 24, seed=7)
    q, k, v = (rand(device, torch.bfloat16, 5, 3, 24, seed=s) for s in (8, 9, 10))
    slots = torch.tensor([23, 0, -1, 5, 4], dtype=torch.int32, device=device)
    expected = cache.clone()
    for i, slot in enumerate(slots.tolist()):
        if slot >= 0:
            expected[0].view(-1, 3, 24)[slot] = k[i]
            expected[1].view(-1, 3, 24)[slot] = v[i]
    positions = torch.zeros(5, dtype=torch.int64, device=device)
    rotate_and_cache(
        q, k, v, positions, rotary.cos.to(device), rotary.sin.to(device), cache[0], cache[1], slots
    )
    assert torch.equal(cache, expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rows,width", [(1, 2 * 172), (5, 2 * 14336)])
def test_silu_and_mul(device, dtype, rows, width):
    x = rand(device, dtype, rows, width, seed=6)
    gate, up = x.cpu().chunk(2, dim=-1)
    expected = torch.nn.functional.silu(gate) * up
    out = silu_and_mul(x)
    assert relative_error(out.cpu(), expected) < TOLERANCE[dtype]
