"""Where a model comes from: a local folder, or a Hugging Face id resolved through the local
Hugging Face cache (downloading into it where the network allows).

No torch here: the CLI resolves names before it loads anything heavy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Shipped inside the package (MIT, see its NOTICE.md): every install can serve something.
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "default_model" / "stories260K"

# What a checkpoint needs to load here: config, weights, tokenizer, generation defaults.
_MODEL_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]


class ModelLoadError(RuntimeError):
    """Anything that stops a model from loading; the message names the problem and the fix."""


class ModelNotFoundError(ModelLoadError):
    """Neither a folder nor a Hugging Face id we can get; the message says how to fetch it."""


@dataclass(frozen=True)
class ModelSource:
    folder: Path
    name: str  # what clients call it unless --served-model-name says otherwise


def resolve_model(model: str | Path) -> ModelSource:
    """A folder stays a folder (named after itself); an id like `org/name` comes from the
    Hugging Face cache, or is downloaded into it unless HF_HUB_OFFLINE is set."""
    path = Path(model).expanduser()
    if path.exists() or not _looks_like_repo_id(str(model)):
        if not path.is_dir():
            raise ModelNotFoundError(
                f"model folder {model} does not exist: pass a Hugging Face model folder "
                "(config.json, weights, tokenizer) or a Hugging Face id such as org/name"
            )
        return ModelSource(path, path.resolve().name)
    return ModelSource(_from_hugging_face(str(model)), str(model))


def _looks_like_repo_id(text: str) -> bool:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if text.startswith((".", "/", "~")) or text.count("/") != 1:
        return False  # a path; Hub ids always have an owner: `org/name`
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def _from_hugging_face(repo_id: str) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=_MODEL_FILES, local_files_only=True))
    except LocalEntryNotFoundError:
        pass  # not cached yet
    if constants.HF_HUB_OFFLINE:
        raise ModelNotFoundError(_how_to_fetch(repo_id, "HF_HUB_OFFLINE is set"))
    try:
        return Path(snapshot_download(repo_id, allow_patterns=_MODEL_FILES))
    except Exception as e:  # network, HTTP, disk or a hub answer we cannot read: say which
        raise ModelNotFoundError(_how_to_fetch(repo_id, _first_line(e))) from e


def _how_to_fetch(repo_id: str, why: str) -> str:
    from huggingface_hub import constants

    local = repo_id.split("/")[-1]
    return (
        f"model {repo_id!r} is not a local folder and not in the Hugging Face cache "
        f"({constants.HF_HUB_CACHE}), and it could not be downloaded ({why}). Where "
        f"huggingface.co is reachable, run `hf download {repo_id} --local-dir ./{local}`, bring "
        f"the folder here and pass --model ./{local} (or set HF_HOME to a cache that holds it)"
    )


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".strip(": ")
