import pytest
from pagoda_worker.engine.completion_text import CompletionText
from pagoda_worker.engine.outputs import FinishReason
from pagoda_worker.engine.sampling_params import SamplingParams
from pagoda_worker.models.source import DEFAULT_MODEL
from transformers import AutoTokenizer

MODEL_DIR = DEFAULT_MODEL


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(MODEL_DIR)


def completion(tokenizer, prompt: str, **params) -> CompletionText:
    prompt_ids = tokenizer.encode(prompt)
    return CompletionText(tokenizer, prompt_ids, SamplingParams(**params), tokenizer.eos_token_id)


def run(completion_text: CompletionText, ids: list[int]) -> tuple[str, FinishReason | None]:
    reason = None
    for token_id in ids:
        _, reason = completion_text.add_token(token_id)
        if reason is not None:
            break
    return completion_text.text, reason


def ids_of(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def test_completion_ends_at_eos(tokenizer):
    ids = [*ids_of(tokenizer, "there was a cat"), tokenizer.eos_token_id, 300]
    assert run(completion(tokenizer, "Hi", max_tokens=50), ids) == (
        "there was a cat",
        FinishReason.STOP,
    )


def test_a_stop_token_leaves_its_own_text_out(tokenizer):
    ids = ids_of(tokenizer, "there was a cat")
    cat = ids_of(tokenizer, "cat")[0]  # "▁c"
    done = completion(tokenizer, "Hi", max_tokens=50, stop_token_ids=[cat])
    assert run(done, ids) == ("there was a", FinishReason.STOP)


def test_a_stop_string_across_tokens_is_cut(tokenizer):
    ids = ids_of(tokenizer, "there was a cat and a dog")
    done = completion(tokenizer, "Hi", max_tokens=50, stop=["cat and"])
    assert run(done, ids) == ("there was a ", FinishReason.STOP)


def test_max_tokens_releases_held_text(tokenizer):
    ids = ids_of(tokenizer, "there was a 😀")  # ends in an unfinished run of byte tokens
    done = completion(tokenizer, "Hi", max_tokens=len(ids), stop=["a 😀!"])
    assert run(done, ids) == ("there was a 😀", FinishReason.LENGTH)


def test_a_stop_string_in_the_last_bytes_wins_over_max_tokens(tokenizer):
    ids = ids_of(tokenizer, "there was a 😀")
    done = completion(tokenizer, "Hi", max_tokens=len(ids), stop=["😀"])
    assert run(done, ids) == ("there was a ", FinishReason.STOP)


def test_prompt_context_keeps_the_leading_space(tokenizer):
    done = CompletionText(
        tokenizer,
        tokenizer.encode("Once upon a time"),
        SamplingParams(max_tokens=2),
        tokenizer.eos_token_id,
        prompt_context=True,
    )
    assert run(done, ids_of(tokenizer, "there was")) == (" there was", FinishReason.LENGTH)
