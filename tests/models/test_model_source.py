"""`--model` takes a folder or a Hugging Face id: ids come from the local Hugging Face cache, are
downloaded into it where a hub is reachable (here: a stand-in on 127.0.0.1), and otherwise get
one message that says how to fetch them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from fake_hub import fake_hub
from pagoda_worker.models.source import DEFAULT_MODEL, ModelNotFoundError, resolve_model

pytestmark = pytest.mark.timeout(180)

GREEDY_CONTINUATION = ", there was a little girl named Lily"


def pagoda(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pagoda.cli", *argv],
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def generate(model: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return pagoda("generate", "--model", model, "--prompt", "Once upon a time",
                  "--max-tokens", "12", env=env)  # fmt: skip


def test_a_hub_id_is_downloaded_into_the_cache_and_then_served_from_it(tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    with fake_hub(DEFAULT_MODEL, {"acme/stories"}) as endpoint:
        first = generate("acme/stories", env | {"HF_ENDPOINT": endpoint})
    assert first.returncode == 0, first.stderr
    assert GREEDY_CONTINUATION in first.stdout
    snapshots = list((tmp_path / "hf/hub/models--acme--stories/snapshots").iterdir())
    assert len(snapshots) == 1 and (snapshots[0] / "model.safetensors").is_file()

    # The hub is gone now: the cache alone serves the id, offline or not.
    for offline in ("0", "1"):
        again = generate("acme/stories", env | {"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": offline})
        assert again.returncode == 0, again.stderr
        assert again.stdout == first.stdout


def test_the_hub_id_is_the_served_name(tmp_path):
    env = os.environ | {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    with fake_hub(DEFAULT_MODEL, {"acme/stories"}) as endpoint:
        shown = subprocess.run(
            [sys.executable, "-c", "from pagoda_worker.engine.llm import LLM; "
             "print(LLM('acme/stories').engine.core.model_name)"],
            env=env | {"HF_ENDPOINT": endpoint}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "acme/stories"


def test_an_id_missing_from_the_cache_offline_says_how_to_fetch_it(tmp_path):
    result = generate("acme/stories", {"HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2
    message = result.stderr.strip()
    assert message.startswith("pagoda generate: model 'acme/stories' is not a local folder")
    assert "HF_HUB_OFFLINE is set" in message
    assert "hf download acme/stories --local-dir ./stories" in message
    assert "Traceback" not in result.stderr


def test_an_id_the_hub_does_not_know_names_the_hubs_answer(tmp_path):
    with fake_hub(DEFAULT_MODEL, {"acme/stories"}) as endpoint:
        result = generate("acme/other", {"HF_HOME": str(tmp_path), "HF_ENDPOINT": endpoint})
    assert result.returncode == 2
    assert "404" in result.stderr and "hf download acme/other" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("path", ["./no-such-model", "/no/such/model", "no/such/model", "nothing"])
def test_paths_that_do_not_exist_are_folders_and_never_reach_a_hub(path):
    with pytest.raises(ModelNotFoundError, match=f"model folder {path} does not exist") as error:
        resolve_model(path)
    assert "or a Hugging Face id such as org/name" in str(error.value)  # the fix, named


def test_a_folder_is_named_after_itself():
    source = resolve_model(str(DEFAULT_MODEL))
    assert (source.folder, source.name) == (DEFAULT_MODEL, "stories260K")
