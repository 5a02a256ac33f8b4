"""FP8 linear layers: the Triton kernels against PyTorch (also in the interpreter), and the layer
on a GPU with FP8 tensor cores against an emulation and against bf16."""

from __future__ import annotations

import pytest
import torch
from kernel_checks import INTERPRETED, relative_error

pytest.importorskip("triton", reason="Triton is not installed")

from pagoda_worker.kernels.fp8 import MIN_SCALE, quantize_rows, weight_only_matmul
from pagoda_worker.layers.fp8_linear import (
    FP8,
    FP8_MAX,
    WEIGHT_ONLY_MAX_ROWS,
    Fp8Linear,
    fp8_supported,
    quantize_weight,
)

# The interpreter has no bf16 dots; fp16 runs the same code paths there.
ACT = torch.float16 if INTERPRETED else torch.bfloat16
# e4m3 keeps 3 mantissa bits: rounding moves a value by at most 2^-4 of itself (normal range).
FP8_STEP = 2.0**-4


def activations(rows: int, cols: int, seed: int, device) -> torch.Tensor:
    """N(0, 1) with a few channels 20x larger, as real activations have."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=gen)
    x[:, torch.randperm(cols, generator=gen)[: max(1, cols // 50)]] *= 20
    return x.to(ACT).to(device)


def within_fp8_rounding(q: torch.Tensor, scales: torch.Tensor, x: torch.Tensor) -> bool:
    """q * scale reproduces x within FP8's rounding (relative in the normal range, absolute
    near zero where e4m3 spacing bottoms out at 2^-9 of the scale)."""
    back, x = q.float() * scales, x.float()
    return bool(((back - x).abs() <= FP8_STEP * x.abs() + 2.0**-9 * scales).all())


@pytest.mark.parametrize(("rows", "cols"), [(1, 64), (5, 200), (33, 4096)])
def test_dynamic_quantization_scales_each_row_to_its_largest_value(device, rows, cols):
    x = activations(rows, cols, seed=cols, device=device)
    q, scales = quantize_rows(x)
    assert q.dtype == FP8 and scales.shape == (rows, 1)
    expected = x.float().abs().amax(dim=1, keepdim=True) / FP8_MAX
    assert torch.allclose(scales, expected, rtol=1e-6)
    assert torch.equal(q.float().abs().amax(dim=1), torch.full((rows,), FP8_MAX, device=device))
    assert within_fp8_rounding(q, scales, x)


def test_static_quantization_uses_the_checkpoint_scale_and_saturates(device):
    x = activations(7, 96, seed=1, device=device)
    static = torch.tensor(0.01, device=device)  # 448 * 0.01 = 4.48: the outliers saturate
    q, scales = quantize_rows(x, static)
    assert torch.equal(scales, torch.full((7, 1), 0.01, device=device))
    saturated = x.float().abs() > FP8_MAX * 0.01
    assert saturated.any()
    assert torch.equal(q.float().abs()[saturated], torch.full_like(x.float()[saturated], FP8_MAX))
    inside = ~saturated
    assert within_fp8_rounding(q.float()[inside], 0.01, x[inside])


def test_a_row_of_zeros_quantizes_to_zeros(device):
    x = torch.zeros(2, 32, dtype=ACT, device=device)
    x[1, 3] = 1.0
    q, scales = quantize_rows(x)
    assert scales[0, 0].item() == pytest.approx(MIN_SCALE)
    assert not q.float().isnan().any() and torch.equal(q[0].float(), torch.zeros(32, device=device))


@pytest.mark.parametrize("rows", [1, 3, 16, 20])
@pytest.mark.parametrize("bias", [False, True])
def test_weight_only_matmul_matches_the_dequantized_product(device, rows, bias):
    """Sizes that are no multiple of any tile: every mask is exercised."""
    gen = torch.Generator().manual_seed(rows)
    x = activations(rows, 200, seed=rows, device=device)
    weight, scale = quantize_weight(torch.randn(72, 200, generator=gen) * 0.02)
    b = (torch.randn(72, generator=gen) * 0.1).to(ACT) if bias else None
    out = weight_only_matmul(
        x, weight.to(device), scale.to(device), None if b is None else b.to(device)
    )
    expected = x.cpu().double() @ (weight.double() * scale.double()[:, None]).t()
    if b is not None:
        expected += b.double()
    assert out.dtype == ACT and out.shape == (rows, 72)
    assert relative_error(out.cpu(), expected) < 4e-3  # the output's own rounding to 16 bits


def test_weight_quantization_is_per_output_channel():
    weight = torch.randn(8, 64) * torch.logspace(-3, 1, 8)[:, None]  # rows of very different size
    q, scale = quantize_weight(weight)
    assert torch.allclose(scale, weight.abs().amax(dim=1) / FP8_MAX)
    assert within_fp8_rounding(q, scale[:, None], weight)


needs_fp8_gpu = pytest.mark.skipif(
    INTERPRETED or not torch.cuda.is_available() or not fp8_supported(torch.device("cuda")),
    reason="needs a GPU with FP8 tensor cores (compute capability ≥ 8.9)",
)


def emulated(layer: Fp8Linear, x: torch.Tensor) -> torch.Tensor:
    """What the layer computes, in float64: weights dequantized, and for batches past the
    weight-only kernel the activations quantized per token (or with the static scale)."""
    weight = layer.weight.double() * layer.weight_scale.double()[:, None]
    xs = x.double()
    if x.shape[0] > WEIGHT_ONLY_MAX_ROWS:
        if layer.input_scale is None:
            scales = x.float().abs().amax(dim=1, keepdim=True) / FP8_MAX
        else:
            scales = layer.input_scale.float().expand(x.shape[0], 1)
        xs = (x.float() / scales).clamp(-FP8_MAX, FP8_MAX).to(FP8).double() * scales.double()
    out = xs @ weight.t()
    return out if layer.bias is None else out + layer.bias.double()


@needs_fp8_gpu
@pytest.mark.parametrize("rows", [1, 8, 16, 17, 64, 300])
@pytest.mark.parametrize("bias", [False, True])
def test_fp8_layer_matches_its_emulation_and_stays_near_bf16(rows, bias):
    torch.manual_seed(rows)
    linear = torch.nn.Linear(512, 384, bias=bias, device="cuda", dtype=torch.bfloat16)
    torch.nn.init.normal_(linear.weight, std=0.02)
    layer = Fp8Linear.quantized(linear)
    x = activations(rows, 512, seed=rows, device="cuda")
    out = layer(x)
    assert out.dtype == torch.bfloat16 and out.shape == (rows, 384)
    assert relative_error(out, emulated(layer, x)) < 6e-3
    assert relative_error(out, linear(x)) < 0.06  # what FP8 costs: a few percent


@needs_fp8_gpu
def test_fp8_layer_with_a_static_input_scale():
    torch.manual_seed(0)
    layer = Fp8Linear.quantized(torch.nn.Linear(256, 128, bias=False, device="cuda"))
    static = Fp8Linear(256, 128, bias=False, static_input=True).cuda()
    static.weight.data, static.weight_scale.data = layer.weight.data, layer.weight_scale.data
    static.input_scale.data = torch.tensor(0.05, device="cuda")
    x = activations(40, 256, seed=2, device="cuda")
    assert relative_error(static(x), emulated(static, x)) < 6e-3


@needs_fp8_gpu
def test_fp8_layer_replays_in_a_cuda_graph():
    layer = Fp8Linear.quantized(torch.nn.Linear(256, 512, device="cuda", dtype=torch.bfloat16))
    for rows in (1, 64):
        x = activations(rows, 256, seed=rows, device="cuda")
        eager = layer(x)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = layer(x)
        x.copy_(activations(rows, 256, seed=rows + 1, device="cuda"))
        graph.replay()
        assert torch.equal(captured, layer(x)) and not torch.equal(captured, eager)
