"""Shared fixtures: the real stories260K model (the copy shipped in the package) and small
random models of each architecture."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from pagoda_worker.models.source import DEFAULT_MODEL

# The test models are tiny: one thread per process beats thread pools fighting over two cores.
torch.set_num_threads(1)

STORIES = DEFAULT_MODEL
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")

# Small random members of each supported family, sharing stories260K's 512-token vocabulary.
TINY_CONFIGS = {
    "llama3": dict(
        model_type="llama",
        rope_parameters=dict(
            rope_type="llama3",
            rope_theta=500000.0,
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=64,
        ),
        tie_word_embeddings=False,
    ),
    "mistral": dict(model_type="mistral", sliding_window=None, tie_word_embeddings=False),
    "qwen2": dict(model_type="qwen2", tie_word_embeddings=True),
    "qwen3": dict(model_type="qwen3", head_dim=16, tie_word_embeddings=True),
}


@pytest.fixture(scope="session")
def stories_dir() -> Path:
    return STORIES


def make_tiny_model(
    family: str, root: Path, shard: bool = False, name: str | None = None, **sizes: int
) -> Path:
    """Save a random-weight model of `family` with stories260K's tokenizer; returns its folder.
    `sizes` change the config's sizes (num_key_value_heads=1, vocab_size=515, ...)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    settings = dict(TINY_CONFIGS[family])
    model_type = settings.pop("model_type")
    shape = dict(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    config = AutoConfig.for_model(
        model_type,
        **(shape | sizes),
        initializer_range=0.15,  # peaked distributions: greedy choices are not float-noise ties
        bos_token_id=1,
        eos_token_id=2,
        **settings,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    folder = root / (name or family)
    model.save_pretrained(folder, max_shard_size="100KB" if shard else "10GB")
    for file in TOKENIZER_FILES:
        shutil.copy(STORIES / file, folder / file)
    return folder


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        family: make_tiny_model(family, root, shard=(family == "qwen2")) for family in TINY_CONFIGS
    }
