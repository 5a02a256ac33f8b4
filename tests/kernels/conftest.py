"""The Triton kernels run on CUDA. Without a GPU these tests skip, unless TRITON_INTERPRET=1 runs
the kernels in Triton's CPU interpreter (slow, but it checks indexing and masking anywhere)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kernel_checks import INTERPRETED


def _let_interpreter_index_with_loaded_scalars() -> None:
    """Triton 3.6's interpreter turns a loaded scalar (a 1-element array) into a loop bound with
    int(), which numpy 2 refuses; the compiled kernels are unaffected."""
    from triton.runtime import interpreter

    original = interpreter._patch_lang_tensor

    def patched(tensor, scope) -> None:
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    interpreter._patch_lang_tensor = patched


def _let_interpreter_round_to_fp8() -> None:
    """Triton 3.6's interpreter narrows floats to FP8 without carrying the rounding into the
    exponent (1.97 becomes 1.0, not 2.0); the GPU rounds to nearest even, as PyTorch does."""
    from triton.runtime import interpreter

    original = interpreter._convert_float
    narrow = {"fp32": torch.float32, "fp16": torch.float16}

    def convert(values, input_dtype, output_dtype, rounding_mode):
        if output_dtype.name != "fp8e4nv" or input_dtype.name not in narrow:
            return original(values, input_dtype, output_dtype, rounding_mode)
        wide = torch.from_numpy(np.ascontiguousarray(values)).to(narrow[input_dtype.name])
        return wide.to(torch.float8_e4m3fn).view(torch.uint8).numpy()

    interpreter._convert_float = convert


if INTERPRETED:
    _let_interpreter_index_with_loaded_scalars()
    _let_interpreter_round_to_fp8()


@pytest.fixture(scope="session")
def device() -> torch.device:
    pytest.importorskip("triton", reason="Triton is not installed")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if INTERPRETED:
        return torch.device("cpu")
    pytest.skip("CUDA is not available: the Triton kernels need a GPU (or TRITON_INTERPRET=1)")
