"""Pagoda has no sliding-window attention: a model with a window shorter than its context
serves a context as long as the window, where full attention gives the same answers."""

from __future__ import annotations

import json
import shutil

import pytest
from pagoda_worker.engine.config import EngineConfig
from pagoda_worker.engine.llm_engine import LLMEngine
from pagoda_worker.models.loader import ModelLoadError


def with_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | changes))
    return str(folder)


@pytest.fixture
def mistral(tiny_models, tmp_path):
    return shutil.copytree(tiny_models["mistral"], tmp_path / "mistral")


def test_a_sliding_window_limits_the_context(mistral):
    engine = LLMEngine(EngineConfig(model=with_config(mistral, sliding_window=64)))
    assert engine.max_model_len == 64


def test_asking_for_more_than_the_window_is_refused(mistral):
    model = with_config(mistral, sliding_window=64)
    with pytest.raises(ModelLoadError, match="context window of 64 tokens"):
        LLMEngine(EngineConfig(model=model, max_model_len=128))


WINDOW_OFF_OR_LONGER = [
    {"sliding_window": None},
    {"sliding_window": 4096},
    {"sliding_window": 64, "use_sliding_window": False},
]


@pytest.mark.parametrize("changes", WINDOW_OFF_OR_LONGER)
def test_a_window_that_is_off_or_longer_changes_nothing(mistral, changes):
    assert LLMEngine(EngineConfig(model=with_config(mistral, **changes))).max_model_len == 512
