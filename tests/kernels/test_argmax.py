"""The two-pass argmax of greedy decoding against torch.argmax, ties included."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="Triton is not installed")

from pagoda_worker.kernels.argmax import CHUNK, argmax_rows


@pytest.mark.parametrize("rows,n", [(1, 128256), (3, CHUNK), (5, 1000), (2, 3 * CHUNK + 1)])
def test_matches_torch_argmax(device, rows, n):
    x = torch.randn(rows, n, generator=torch.Generator().manual_seed(n)).to(device)
    assert torch.equal(argmax_rows(x).cpu(), x.cpu().argmax(dim=-1))


def test_ties_go_to_the_first_index_across_chunks(device):
    """Row 0 ties inside one chunk, row 1 across chunks; -inf (masked) entries never win."""
    x = torch.full((3, 3 * CHUNK), float("-inf"))
    x[0, [7, 9]] = 2.0
    x[1, [CHUNK + 5, 2 * CHUNK + 1, CHUNK + 6]] = 1.0
    x[2, 3 * CHUNK - 1] = -5.0
    assert argmax_rows(x.to(device)).tolist() == [7, CHUNK + 5, 3 * CHUNK - 1]


def test_a_strided_batch_of_rows(device):
    x = torch.randn(4, 2 * CHUNK + 100, generator=torch.Generator().manual_seed(1)).to(device)
    assert torch.equal(argmax_rows(x[::2]).cpu(), x[::2].cpu().argmax(dim=-1))
    assert argmax_rows(x[:0]).shape == (0,)
