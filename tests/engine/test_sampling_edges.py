"""Sampling parameters as the engine uses them: numbers that are valid in float64 but vanish
in float32 must not turn probabilities into NaN."""

from __future__ import annotations

import math

import pytest
import torch
from pagoda_worker.engine.sampler import Sampler, SamplingRow
from pagoda_worker.engine.sampling_params import SamplingParams, SamplingParamsError

LOGITS = torch.tensor([[0.5, 3.0, 1.0, -2.0], [2.0, 0.1, 0.2, 1.9]])


def sample(**params) -> list[int]:
    rows = [SamplingRow(SamplingParams(**params), [1], [], None) for _ in range(len(LOGITS))]
    return Sampler(torch.Generator().manual_seed(0))(LOGITS.clone(), rows).token_ids.tolist()


@pytest.mark.parametrize("temperature", [1e-39, 1e-6, 5e-324])
def test_tiny_temperatures_are_greedy(temperature):
    assert SamplingParams(temperature=temperature).greedy
    assert sample(temperature=temperature) == [1, 0]


@pytest.mark.parametrize("top_p", [1e-46, 1e-9])
def test_tiny_top_p_keeps_the_best_token(top_p):
    for _ in range(5):
        assert sample(temperature=1.0, top_p=top_p) == [1, 0]


@pytest.mark.parametrize("name", ["temperature", "top_p", "min_p", "presence_penalty"])
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_numbers_are_refused(name, value):
    with pytest.raises(SamplingParamsError, match="finite") as refused:
        SamplingParams(**{name: value})
    assert refused.value.field == name
