"""A model folder's tokenizer, without torch: the server's front end loads it too."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

from pagoda_worker.models.source import ModelLoadError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")


def has_tokenizer(model_dir: Path) -> bool:
    return any((model_dir / name).is_file() for name in TOKENIZER_FILES)


def load_tokenizer(model_dir: Path):
    try:
        return AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{model_dir}: the tokenizer cannot be loaded: {exc}") from exc


def tokenizer_for(model_dir: Path, load_format: str):
    """The folder's tokenizer; None for a random-weight benchmark model that comes without one
    (token ids only)."""
    if load_format == "dummy" and not has_tokenizer(model_dir):
        return None
    return load_tokenizer(model_dir)
