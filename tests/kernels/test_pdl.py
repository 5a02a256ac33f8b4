"""When kernels launch with programmatic dependent launch (kernels/pdl.py)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="Triton is not installed")

from pagoda_worker.kernels.pdl import pdl_args


def test_pdl_is_off_on_the_cpu():
    assert pdl_args(torch.device("cpu")) == {"PDL": False}


def test_pdl_is_off_in_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert pdl_args(torch.device("cuda", 0)) == {"PDL": False}


def test_pagoda_pdl_0_turns_it_off(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv("PAGODA_PDL", "0")
    assert pdl_args(torch.device("cuda", 0)) == {"PDL": False}


@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() < (9, 0),
    reason="needs a Hopper or later GPU",
)
def test_pdl_is_on_for_hopper_by_default(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("PAGODA_PDL", raising=False)
    assert pdl_args(torch.device("cuda", 0)) == {"PDL": True, "launch_pdl": True}
