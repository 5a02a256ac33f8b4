import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pagoda_worker.engine.detokenizer import IncrementalDetokenizer
from pagoda_worker.models.source import DEFAULT_MODEL
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

MODEL_DIR = DEFAULT_MODEL
UNICODE_TEXT = "Hello 😀 world 日本語 café 🎉🎉 Ω≈ç√ done"


@pytest.fixture(scope="module")
def tokenizer():
    """SentencePiece with byte fallback (Llama 2 style)."""
    return AutoTokenizer.from_pretrained(MODEL_DIR)


@pytest.fixture(scope="module")
def byte_level_tokenizer():
    """Byte-level BPE (Llama 3 / Qwen style): characters split at arbitrary byte boundaries."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=320, initial_alphabet=alphabet, special_tokens=["<|end|>"]
    )
    bpe.train_from_iterator(["hello world", "the cat sat on the mat"], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|end|>")


@pytest.fixture(scope="module", params=["sentencepiece", "byte_level"])
def any_tokenizer(request, tokenizer, byte_level_tokenizer):
    return tokenizer if request.param == "sentencepiece" else byte_level_tokenizer


def byte_token(tokenizer, value: int) -> int:
    return tokenizer.convert_tokens_to_ids(f"<0x{value:02X}>")


def stream(detokenizer: IncrementalDetokenizer, ids: list[int], chunk: int = 1) -> list[str]:
    return [detokenizer.add_tokens(ids[i : i + chunk]) for i in range(0, len(ids), chunk)]


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    chunks=st.lists(st.integers(1, 4), min_size=40, max_size=40),
    skip_special_tokens=st.booleans(),
)
def test_deltas_add_up_to_the_full_decode(any_tokenizer, data, chunks, skip_special_tokens):
    tokenizer = any_tokenizer
    ids = data.draw(st.lists(st.integers(0, len(tokenizer) - 1), max_size=40))
    detokenizer = IncrementalDetokenizer(tokenizer, [1, 2], skip_special_tokens)
    deltas, start = [], 0
    for size in chunks:
        deltas.append(detokenizer.add_tokens(ids[start : start + size]))
        start += size
    deltas.append(detokenizer.flush())
    expected = tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
    assert "".join(deltas) == expected
    assert detokenizer.text == expected


@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_multibyte_characters_are_never_split(any_tokenizer, chunk):
    tokenizer = any_tokenizer
    ids = tokenizer.encode(UNICODE_TEXT, add_special_tokens=False)
    assert "\ufffd" in "".join(tokenizer.decode([i]) for i in ids)  # some tokens hold byte pieces
    detokenizer = IncrementalDetokenizer(tokenizer, [1])
    deltas = stream(detokenizer, ids, chunk)
    assert not any("\ufffd" in delta for delta in deltas)
    assert "".join(deltas) + detokenizer.flush() == UNICODE_TEXT


def test_an_emoji_is_held_until_its_bytes_are_complete(tokenizer):
    ids = tokenizer.encode("a 😀 b", add_special_tokens=False)
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens == ["▁a", "▁", "<0xF0>", "<0x9F>", "<0x98>", "<0x80>", "▁b"]
    detokenizer = IncrementalDetokenizer(tokenizer, [1])
    assert stream(detokenizer, ids) == ["a", " ", "", "", "", "", "😀 b"]


def test_flush_releases_a_run_of_bytes_at_the_end(tokenizer):
    ids = tokenizer.encode("a 😀", add_special_tokens=False)
    detokenizer = IncrementalDetokenizer(tokenizer, [1])
    assert "".join(stream(detokenizer, ids)) == "a "
    assert detokenizer.flush() == "😀"
    assert detokenizer.text == "a 😀"


def test_bytes_that_turn_out_invalid_decode_as_the_tokenizer_does(tokenizer):
    # <0x41> alone decodes to "A", but the run <0x41><0xF0> is not UTF-8: the tokenizer makes
    # both bytes U+FFFD, so the "A" must not have been emitted early.
    ids = [byte_token(tokenizer, 0x41), byte_token(tokenizer, 0xF0)]
    detokenizer = IncrementalDetokenizer(tokenizer, [1])
    assert stream(detokenizer, ids) == ["", ""]
    assert detokenizer.flush() == tokenizer.decode(ids) == "\ufffd\ufffd"


def test_skipped_special_tokens_do_not_end_a_run_of_bytes(tokenizer):
    emoji = [byte_token(tokenizer, b) for b in "😀".encode()]
    ids = [*emoji[:2], tokenizer.eos_token_id, *emoji[2:], tokenizer.encode("a")[-1]]
    detokenizer = IncrementalDetokenizer(tokenizer, [1])
    assert "".join(stream(detokenizer, ids)) == tokenizer.decode(ids, skip_special_tokens=True)
    assert detokenizer.text == "😀 a"


def test_special_tokens_appear_when_not_skipped(tokenizer):
    ids = [*tokenizer.encode("hi", add_special_tokens=False), tokenizer.eos_token_id]
    kept = IncrementalDetokenizer(tokenizer, [1], skip_special_tokens=False)
    skipped = IncrementalDetokenizer(tokenizer, [1])
    assert "".join(stream(kept, ids)) + kept.flush() == "hi</s>"
    assert "".join(stream(skipped, ids)) + skipped.flush() == "hi"


def test_text_is_the_output_decoded_on_its_own(tokenizer):
    # SentencePiece drops the leading space of the first token when the output is decoded alone.
    prompt = tokenizer.encode("Once upon a time", add_special_tokens=True)
    output = tokenizer.encode("Once upon a time there was a cat", add_special_tokens=True)
    output = output[len(prompt) :]
    detokenizer = IncrementalDetokenizer(tokenizer, prompt)
    stream(detokenizer, output)
    assert detokenizer.text == tokenizer.decode(output, skip_special_tokens=True)
    assert detokenizer.text == "there was a cat"


def test_prompt_context_continues_the_prompt(tokenizer):
    prompt = tokenizer.encode("Once upon a time", add_special_tokens=True)
    full = tokenizer.encode("Once upon a time there was a cat", add_special_tokens=True)
    detokenizer = IncrementalDetokenizer(tokenizer, prompt, prompt_context=True)
    deltas = stream(detokenizer, full[len(prompt) :])
    assert deltas[0] == " there"
    assert "Once upon a time" + detokenizer.text == tokenizer.decode(full, skip_special_tokens=True)


class CountingTokenizer:
    """Forwards to a tokenizer and records how many ids each decode got, through transformers'
    decode or the Rust tokenizer's own."""

    def __init__(self, target, decoded_lengths: list[int] | None = None):
        self._target = target
        self.decoded_lengths = [] if decoded_lengths is None else decoded_lengths
        backend = getattr(target, "backend_tokenizer", None)
        if backend is not None:
            self.backend_tokenizer = CountingTokenizer(backend, self.decoded_lengths)

    def __getattr__(self, name):
        return getattr(self._target, name)

    def decode(self, ids, **kwargs):
        self.decoded_lengths.append(len(ids))
        return self._target.decode(ids, **kwargs)


def test_each_step_decodes_a_small_window(tokenizer):
    counting = CountingTokenizer(tokenizer)
    ids = tokenizer.encode(UNICODE_TEXT * 10, add_special_tokens=False)
    detokenizer = IncrementalDetokenizer(counting, [1])
    stream(detokenizer, ids)
    assert len(ids) > 400
    assert detokenizer.text + detokenizer.flush() == tokenizer.decode(ids)
    # A window holds the previous delta's tokens and the new ones: at most two byte runs and
    # the tokens that close them, however long the output grows.
    assert max(counting.decoded_lengths) <= 2 * (longest_byte_run(tokenizer, ids) + 1)
    assert len(counting.decoded_lengths) <= 2 * len(ids)


def longest_byte_run(tokenizer, ids: list[int]) -> int:
    longest = current = 0
    for token in tokenizer.convert_ids_to_tokens(ids):
        current = current + 1 if token.startswith("<0x") else 0
        longest = max(longest, current)
    return longest
