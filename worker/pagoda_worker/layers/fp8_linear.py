"""A linear layer with FP8 (e4m3) weights, one scale per output channel.

Small batches (decode of a few sequences) multiply bf16 activations by the FP8 weights,
dequantized in registers (W8A16): the step is bound by reading the weights, and they are half
the bytes. Larger batches quantize the activations per token and run FP8 x FP8 on the tensor
cores through `torch._scaled_mm` (W8A8), twice bf16's arithmetic rate.
"""

from __future__ import annotations

import torch
from torch import nn

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max
# Batches up to this many rows take the weight-only kernel (measured crossover: bench/NOTES.md).
WEIGHT_ONLY_MAX_ROWS = 16
# torch._scaled_mm needs both matrix sides in multiples of 16.
ALIGNMENT = 16


def fp8_supported(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


def fits_fp8(in_features: int, out_features: int) -> bool:
    return in_features % ALIGNMENT == 0 and out_features % ALIGNMENT == 0


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, K] -> (FP8 [N, K], float32 [N]): each output channel scaled so its largest magnitude
    lands on FP8's largest value."""
    w = weight.float()
    scale = (w.abs().amax(dim=1) / FP8_MAX).clamp(min=torch.finfo(torch.float32).tiny)
    return (w / scale[:, None]).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


class Fp8Linear(nn.Module):
    """y = x @ (weight * weight_scale[:, None]).T + bias, with x in bf16 or fp16.

    `input_scale`, when the checkpoint brings one, is a static per-tensor activation scale;
    without it each token's activations get their own scale at run time."""

    def __init__(self, in_features: int, out_features: int, bias: bool, static_input: bool):
        super().__init__()
        if not fits_fp8(in_features, out_features):
            raise ValueError(
                f"an FP8 linear layer needs sizes in multiples of {ALIGNMENT}, "
                f"not {in_features} -> {out_features}"
            )
        self.in_features, self.out_features = in_features, out_features
        frozen = {"requires_grad": False}
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=FP8), **frozen)
        self.weight_scale = nn.Parameter(torch.empty(out_features), **frozen)
        self.input_scale = nn.Parameter(torch.empty(()), **frozen) if static_input else None
        self.bias = nn.Parameter(torch.empty(out_features), **frozen) if bias else None

    @classmethod
    def quantized(cls, linear: nn.Linear) -> Fp8Linear:
        """Online quantization of a loaded layer; the bias keeps its dtype."""
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, False)
        weight, scale = quantize_weight(linear.weight.detach())
        layer.weight.data, layer.weight_scale.data = weight, scale
        if linear.bias is not None:
            assert layer.bias is not None  # made above, as linear has one
            layer.bias.data = linear.bias.detach()
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from pagoda_worker.kernels.fp8 import quantize_rows, weight_only_matmul  # Triton: CUDA only

        if x.shape[0] <= WEIGHT_ONLY_MAX_ROWS:
            return weight_only_matmul(x, self.weight, self.weight_scale, self.bias)
        q, scales = quantize_rows(x, self.input_scale)
        out = torch._scaled_mm(
            q, self.weight.t(), scale_a=scales, scale_b=self.weight_scale.view(1, -1),
            out_dtype=x.dtype,
        )  # fmt: skip
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        static = ", static input scale" if self.input_scale is not None else ""
        return f"{self.in_features} -> {self.out_features}, fp8 weights{static}"
