"""FP8 linear layers at Llama-3.1-8B's shapes: error against bf16, and time per call. Needs a GPU
of compute capability ≥ 8.9.

For each layer shape and batch size M: the relative error of the FP8 layer's output against the
bf16 layer's (random weights with std 0.02; activations N(0, 1) with 1% outlier channels at 20x),
and µs per call of bf16 `torch.mm`, the weight-only FP8 kernel and FP8 `_scaled_mm` with the
activation quantized per token, each timed as a CUDA graph of calls rotating over enough weight
copies that the L2 cache holds none of them. Then a sweep of the weight-only kernel's tiles at M=1,
4 and 16, and one of the per-token quantization's blocks.

    python bench/fp8_layers.py                  # all of it
    python bench/fp8_layers.py --tiles-only     # the tile sweeps
    python bench/fp8_layers.py --quantize-only  # the quantization sweep
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

sys.path.extend(  # the checkout's packages, uninstalled
    str(Path(__file__).resolve().parents[1] / root)
    for root in ("", "worker", "gateway", "operator")
)

from pagoda_worker.kernels.fp8 import Tiles, quantize_rows, weight_only_matmul
from pagoda_worker.layers.fp8_linear import WEIGHT_ONLY_MAX_ROWS, Fp8Linear, quantize_weight

LAYERS = {  # name: (in_features K, out_features N)
    "qkv": (4096, 6144),
    "o": (4096, 4096),
    "gate_up": (4096, 28672),
    "down": (14336, 4096),
}
BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 2048, 8192)
L2_BYTES = 64 * 2**20


def activations(m: int, k: int, gen: torch.Generator) -> torch.Tensor:
    x = torch.randn(m, k, generator=gen, device="cuda")
    outliers = torch.rand(k, generator=gen, device="cuda") < 0.01
    return (x * torch.where(outliers, 20.0, 1.0)).bfloat16()


def graph_us(calls, repeats: int = 10) -> float:
    """Median µs per call of a CUDA graph that makes every call in `calls` once."""
    for call in calls:  # compile and warm up outside the graph
        call()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for call in calls:
            call()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / len(calls))
    return statistics.median(times)


def rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def layer_rows(gen: torch.Generator) -> None:
    print(f"{'layer':8}{'M':>6}{'bf16 us':>10}{'w-only us':>11}{'w8a8 us':>10}{'best/bf16':>11}"
          f"{'err w-only':>12}{'err w8a8':>10}")  # fmt: skip
    for name, (k, n) in LAYERS.items():
        copies = max(1, -(-2 * L2_BYTES // (n * k)))  # fp8 weights of all copies: 2x the L2
        linears = []
        for _ in range(copies):
            linear = torch.nn.Linear(k, n, bias=False, device="cuda", dtype=torch.bfloat16)
            torch.nn.init.normal_(linear.weight, std=0.02, generator=gen)
            linears.append(linear)
        fp8 = [Fp8Linear.quantized(linear) for linear in linears]
        for m in BATCHES:
            x = activations(m, k, gen)
            ref = x.float() @ linears[0].weight.float().t()
            w_only = weight_only_matmul(x[:16], fp8[0].weight, fp8[0].weight_scale, None)
            q, scales = quantize_rows(x)
            w8a8 = torch._scaled_mm(
                q, fp8[0].weight.t(), scale_a=scales, scale_b=fp8[0].weight_scale.view(1, -1),
                out_dtype=torch.bfloat16,
            )  # fmt: skip
            bf16_us = graph_us([lambda w=lin.weight, x=x: torch.mm(x, w.t()) for lin in linears])
            wo_us = graph_us([
                lambda f=f, x=x: weight_only_matmul(x, f.weight, f.weight_scale, None)
                for f in fp8
            ]) if m <= WEIGHT_ONLY_MAX_ROWS else float("nan")  # fmt: skip
            w8a8_us = graph_us([lambda f=f, x=x: w8a8_call(x, f) for f in fp8])
            best = min(t for t in (wo_us, w8a8_us) if t == t)
            errors = f"{rel(w_only, ref[:16]):12.4f}{rel(w8a8, ref):10.4f}"
            print(f"{name:8}{m:6}{bf16_us:10.1f}{wo_us:11.1f}{w8a8_us:10.1f}"
                  f"{bf16_us / best:10.2f}x{errors}")  # fmt: skip
        del linears, fp8
        torch.cuda.empty_cache()


def w8a8_call(x: torch.Tensor, layer: Fp8Linear) -> torch.Tensor:
    q, scales = quantize_rows(x)
    return torch._scaled_mm(
        q, layer.weight.t(), scale_a=scales, scale_b=layer.weight_scale.view(1, -1),
        out_dtype=x.dtype,
    )  # fmt: skip


def tile_sweep(gen: torch.Generator) -> None:
    one_row = [
        Tiles(1, bn, bk, w, s)
        for bn, bk in ((4, 1024), (8, 512), (8, 1024), (16, 256), (16, 512), (32, 256), (32, 128))
        for w, s in ((4, 2), (4, 4), (8, 3))
    ]
    few_rows = [
        Tiles(16, bn, bk, w, s)
        for bn, bk in ((16, 256), (32, 256), (32, 128), (64, 128), (16, 512), (32, 512), (64, 256))
        for w, s in ((4, 3), (4, 4), (8, 4))
    ]
    print("\nweight-only tiles (µs per call; the four layers' sum, then each layer):")
    layers = {}
    for name, (k, n) in LAYERS.items():
        copies = max(1, -(-2 * L2_BYTES // (n * k)))
        layers[name] = [
            quantize_weight(torch.randn(n, k, generator=gen, device="cuda") * 0.02)
            for _ in range(copies)
        ]
    for m, sweep in ((1, one_row), (4, few_rows), (16, few_rows)):
        xs = {name: activations(m, k, gen) for name, (k, _) in LAYERS.items()}
        results = []
        for tiles in sweep:
            per = {
                name: graph_us([
                    lambda w=w, s=s, x=xs[name], t=tiles: weight_only_matmul(x, w, s, None, t)
                    for w, s in copies
                ])
                for name, copies in layers.items()
            }  # fmt: skip
            results.append((sum(per.values()), tiles, per))
        for total, tiles, per in sorted(results, key=lambda r: r[0])[:5]:
            detail = " ".join(f"{n}={t:.1f}" for n, t in per.items())
            print(f"M={m:2} {total:7.1f}  {tiles}  {detail}")  # fmt: skip


def quantize_sweep(gen: torch.Generator) -> None:
    print("\nper-token quantization (µs per call, and GB/s moved) by (block, warps):")
    blocks = [(1024, 4), (2048, 4), (4096, 8), (16384, 8), (16384, 16)]
    print(f"{'M':>6}{'K':>7}" + "".join(f"{b!s:>20}" for b in blocks))
    for m in (1, 16, 256, 1024, 8192):
        for k in (4096, 14336):
            xs = [activations(m, k, gen) for _ in range(4)]
            cells = []
            for block in blocks:
                us = graph_us([lambda x=x, b=block: quantize_rows(x, None, b) for x in xs])
                cells.append(f"{us:9.1f} ({m * k * 3 / us / 1e3:6.0f})")
            print(f"{m:6}{k:7}" + "".join(f"{c:>20}" for c in cells))


def main() -> int:
    if not torch.cuda.is_available():
        print("bench/fp8_layers.py needs a CUDA GPU of compute capability ≥ 8.9", file=sys.stderr)
        return 2
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    gen = torch.Generator(device="cuda").manual_seed(0)
    with torch.inference_mode():
        if "--tiles-only" in sys.argv:
            tile_sweep(gen)
            return 0
        if "--quantize-only" not in sys.argv:
            layer_rows(gen)
            tile_sweep(gen)
        quantize_sweep(gen)
    return 0


if __name__ == "__main__":
    sys.exit(main())
