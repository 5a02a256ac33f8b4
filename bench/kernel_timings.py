"""Kernel timings at the anchor model's shapes (Llama-3.1-8B: 32 query / 8 KV heads, d 128, bf16),
against the bytes each must move and PyTorch's own fused attention. Needs CUDA.

    python bench/kernel_timings.py
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import torch
import triton
from torch.nn import functional as F

sys.path.extend(  # the checkout's packages, uninstalled
    str(Path(__file__).resolve().parents[1] / root)
    for root in ("", "worker", "gateway", "operator")
)

from pagoda_worker.kernels.activation import silu_and_mul
from pagoda_worker.kernels.norm import rms_norm
from pagoda_worker.kernels.paged_attention import (
    decode_num_splits,
    paged_decode_attention,
    paged_prefill_attention,
)

HQ, HKV, D, BS = 32, 8, 128, 16
DT = torch.bfloat16


def ms(fn) -> float:
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def paged(num_seqs: int, context: int):
    blocks = -(-context // BS)
    cache = torch.randn(2, num_seqs * blocks, BS, HKV, D, dtype=DT, device="cuda")
    tables = torch.randperm(num_seqs * blocks, device="cuda", dtype=torch.int32).view(num_seqs, -1)
    lens = torch.full((num_seqs,), context, dtype=torch.int32, device="cuda")
    return cache, tables, lens


def main() -> None:
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    rows = []
    for num_seqs, context in [(1, 128), (1, 1024), (1, 8192), (64, 1024), (256, 1024)]:
        cache, tables, lens = paged(num_seqs, context)
        q = torch.randn(num_seqs, HQ, D, dtype=DT, device="cuda")
        splits = decode_num_splits(num_seqs, HKV, context, sms)
        args = (q, cache[0], cache[1], tables, lens, D**-0.5, torch.empty_like(q), splits)
        t = ms(partial(paged_decode_attention, *args))
        gbytes = 2 * num_seqs * context * HKV * D * 2 / 1e9
        rows.append(
            (f"decode B={num_seqs} ctx={context} splits={splits}", t, f"{gbytes / t:.2f} TB/s")
        )

    for num_seqs, length in [(1, 1024), (8, 1024), (2, 4096)]:
        tokens = num_seqs * length
        cache, tables, lens = paged(num_seqs, length)
        q = torch.randn(tokens, HQ, D, dtype=DT, device="cuda")
        qsl = torch.arange(0, tokens + 1, length, dtype=torch.int32, device="cuda")
        flops = 4 * num_seqs * length * length / 2 * HQ * D
        args = (q, cache[0], cache[1], tables, qsl, lens, D**-0.5, torch.empty_like(q), 0, length)
        t = ms(partial(paged_prefill_attention, *args))
        rows.append((f"prefill triton {num_seqs}x{length}", t, f"{flops / t / 1e9:.0f} TFLOP/s"))
        k = torch.randn(num_seqs, HKV, length, D, dtype=DT, device="cuda")
        qb = q.view(num_seqs, length, HQ, D).transpose(1, 2)
        sdpa = partial(F.scaled_dot_product_attention, is_causal=True, enable_gqa=True)
        t = ms(partial(sdpa, qb, k, k))
        rows.append(
            (f"prefill torch SDPA {num_seqs}x{length}", t, f"{flops / t / 1e9:.0f} TFLOP/s")
        )

    for tokens in (1, 256, 8192):
        x = torch.randn(tokens, 4096, dtype=DT, device="cuda")
        w = torch.randn(4096, dtype=DT, device="cuda")
        t = ms(partial(rms_norm, x, w, 1e-5, x))
        rows.append((f"rms_norm+residual T={tokens}", t, f"{4 * x.numel() * 2 / t / 1e6:.0f} GB/s"))
        g = torch.randn(tokens, 2 * 14336, dtype=DT, device="cuda")
        t = ms(partial(silu_and_mul, g))
        rows.append((f"silu_and_mul T={tokens}", t, f"{1.5 * g.numel() * 2 / t / 1e6:.0f} GB/s"))

    print(torch.cuda.get_device_name())
    for name, t, rate in rows:
        print(f"{name:40}{t * 1e3:10.1f} us  {rate}")


if __name__ == "__main__":
    main()
