"""Turns a growing list of generated token ids into text deltas that never need taking back.

Each step decodes only a small window: the tokens of the previous delta (as context, so merges
and spaces at the seam come out as in a full decode) plus the new ones. Text is held back while
it could still change:
- it ends in U+FFFD: a multi-byte character whose remaining bytes are still to come;
- it comes from a run of SentencePiece byte-fallback tokens (<0xE2>...) that has not ended yet:
  the tokenizer decodes such a run as a whole and turns every byte of it into U+FFFD when the
  run is not valid UTF-8, so one more byte can change the text of the bytes before it.
`flush()` hands out what is held back once the sequence has ended.

The text equals `tokenizer.decode(output_ids, skip_special_tokens=...)`: for SentencePiece
tokenizers that means the first output token loses its leading space, exactly as when
transformers decodes the output on its own. With `prompt_context=True` the output is decoded as
the continuation of the prompt instead (keeps that space: `"Once upon a time"` + `" there"`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from weakref import ref

PROMPT_CONTEXT_TOKENS = 5  # prompt tokens decoded ahead of the output with prompt_context
_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")
_REPLACEMENT_CHAR = "\ufffd"


@dataclass(frozen=True)
class _TokenKinds:
    byte_ids: frozenset[int]  # byte-fallback tokens such as <0xE2>
    byte_or_special_ids: frozenset[int]  # built once: every detokenizer shares the set


# id(tokenizer) -> (a weak reference to it, its kinds). Keyed by id because making a weak
# reference to a transformers tokenizer costs ~60 us, paid by every sequence of a request.
_token_kinds: dict[int, tuple[ref, _TokenKinds]] = {}


def _kinds_of(tokenizer: Any) -> _TokenKinds:
    """Scanning the vocabulary costs O(vocab), so it happens once per tokenizer."""
    cached = _token_kinds.get(id(tokenizer))
    if cached is not None and cached[0]() is tokenizer:  # not a dead one's reused id
        return cached[1]
    vocab = tokenizer.get_vocab()
    byte_ids = frozenset(i for token, i in vocab.items() if _BYTE_TOKEN.fullmatch(token))
    added_special = (i for i, t in tokenizer.added_tokens_decoder.items() if t.special)
    special_ids = frozenset(tokenizer.all_special_ids).union(added_special)
    kinds = _TokenKinds(byte_ids, byte_ids | special_ids)
    _token_kinds[id(tokenizer)] = (ref(tokenizer), kinds)
    return kinds


class IncrementalDetokenizer:
    def __init__(
        self,
        tokenizer: Any,
        prompt_token_ids: list[int],
        skip_special_tokens: bool = True,
        *,
        prompt_context: bool = False,
    ) -> None:
        self._decode_ids = _decoder(tokenizer)
        self._skip_special_tokens = skip_special_tokens
        kinds = _kinds_of(tokenizer)
        # Tokens that leave a byte run open: bytes, and special tokens the decode drops.
        self._run_ids = kinds.byte_or_special_ids if skip_special_tokens else kinds.byte_ids
        context = list(prompt_token_ids[-PROMPT_CONTEXT_TOKENS:]) if prompt_context else []
        self._ids = context
        self._window_start = 0  # decoded only as context for the next delta
        self._read = len(context)  # tokens before this are in the emitted text
        self._text = ""

    @property
    def text(self) -> str:
        """All text emitted so far."""
        return self._text

    def add_tokens(self, new_token_ids: list[int]) -> str:
        """Returns the text the new tokens settle (may be "")."""
        self._ids.extend(new_token_ids)
        return self._emit(self._settled_end(), final=False)

    def flush(self) -> str:
        """The held-back text, once no more tokens will come."""
        return self._emit(len(self._ids), final=True)

    def _settled_end(self) -> int:
        """Tokens after the last one that closes a byte run may still change their text."""
        end = len(self._ids)
        while end > self._read and self._ids[end - 1] in self._run_ids:
            end -= 1
        return end

    def _emit(self, end: int, final: bool) -> str:
        if end <= self._read:
            return ""
        context = self._decode(self._ids[self._window_start : self._read])
        text = self._decode(self._ids[self._window_start : end])
        if text.endswith(_REPLACEMENT_CHAR) and not final:
            return ""
        delta = text[len(context) :]
        self._window_start, self._read = self._read, end
        self._text += delta
        return delta

    def _decode(self, ids: list[int]) -> str:
        return self._decode_ids(ids, skip_special_tokens=self._skip_special_tokens)


def _decoder(tokenizer: Any):
    """`tokenizer.decode`, or the Rust tokenizer's own decode where that is all transformers
    would do (no clean-up pass): the Python wrapper costs more than the decode itself, twice per
    token of every running sequence."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or getattr(tokenizer, "clean_up_tokenization_spaces", False):
        return tokenizer.decode
    return backend.decode
