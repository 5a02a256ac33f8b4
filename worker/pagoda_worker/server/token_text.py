"""Each token's text as it reads inside a text, for logprobs.

Decoded alone, a SentencePiece token drops its leading space ("▁upon" -> "upon"), so the
tokens of a completion would not add up to its text, and `text_offset` would not point into
it. Decoded after a fixed anchor token, it keeps the space: " upon".
"""

from __future__ import annotations

from functools import lru_cache


class TokenText:
    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.anchor = tokenizer.encode("a", add_special_tokens=False)[-1]
        self.anchor_text = tokenizer.decode([self.anchor])
        self._cached = lru_cache(maxsize=65536)(self._decode)

    def __call__(self, token_id: int) -> str:
        return self._cached(token_id)

    def _decode(self, token_id: int) -> str:
        text = self.tokenizer.decode([self.anchor, token_id])
        if text.startswith(self.anchor_text):
            return text[len(self.anchor_text) :]
        return self.tokenizer.decode([token_id])  # a tokenizer that merges across the anchor
