"""The engine's defining property: greedy outputs equal transformers' `generate`, token for token,
for every request of a mixed concurrent batch — whatever the batching, caching and preemption."""

from __future__ import annotations

import pytest

from tests.engine.workloads import check_against_transformers


def test_stories260k_mixed_batch(stories_dir):
    check_against_transformers(stories_dir, seed=0)


@pytest.mark.parametrize("family", ["llama3", "mistral", "qwen2", "qwen3"])
def test_random_models_mixed_batch(tiny_models, family):
    check_against_transformers(tiny_models[family], seed=1)
