"""The shapes of OpenAI responses: completions and chat, whole and streamed."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from worker.engine.outputs import CompletionOutput, TokenLogprob

TokenText = Callable[[int], str]


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _finite(logprob: float) -> float:
    """JSON has no -inf; a very unlikely token gets a very small number instead."""
    return -9999.0 if math.isnan(logprob) else max(logprob, -9999.0)


def _reason(completion: CompletionOutput) -> str | None:
    return None if completion.finish_reason is None else str(completion.finish_reason)


@dataclass
class Echo:
    """Completions' `echo`: each choice starts with its prompt, and with logprobs the prompt's
    tokens come first (their logprobs null: the engine computes none for prompt tokens)."""

    texts: list[str]  # per prompt
    token_ids: list[list[int]]  # per prompt
    n: int  # choices per prompt


class CompletionFormat:
    """POST /v1/completions: `text` choices, legacy `logprobs` with tokens and offsets."""

    id_prefix = "cmpl-"
    object = "text_completion"
    chunk_object = "text_completion"

    def __init__(self, token_text: TokenText, echo: Echo | None = None) -> None:
        self.token_text = token_text
        self.echo = echo
        self._offsets: dict[int, int] = defaultdict(int)  # streamed text length per choice
        self._echoed: set[int] = set()  # streamed choices whose prompt went out already

    def opening_choices(self, num_choices: int) -> list[dict]:
        return []

    def delta_choice(self, index: int, completion: CompletionOutput) -> dict:
        echoed = index in self._echoed
        self._echoed.add(index)
        text, prompt_ids = self._prompt(index) if not echoed else ("", [])
        return {
            "index": index,
            "text": text + completion.new_text,
            "logprobs": self._logprobs(index, completion.new_logprobs, prompt_ids),
            "finish_reason": _reason(completion),
        }

    def final_choice(self, index: int, completion: CompletionOutput) -> dict:
        text, prompt_ids = self._prompt(index)
        return {
            "index": index,
            "text": text + completion.text,
            "logprobs": self._logprobs(index, completion.logprobs, prompt_ids),
            "finish_reason": _reason(completion),
        }

    def _prompt(self, index: int) -> tuple[str, list[int]]:
        """What echo puts in front of a choice: its prompt's text and tokens."""
        if self.echo is None:
            return "", []
        prompt = index // self.echo.n
        return self.echo.texts[prompt], self.echo.token_ids[prompt]

    def _logprobs(
        self, index: int, entries: list[TokenLogprob] | None, prompt_ids: list[int]
    ) -> dict | None:
        if entries is None:
            return None
        tokens = [self.token_text(t) for t in prompt_ids]
        tokens += [self.token_text(e.token_id) for e in entries]
        offsets = []
        for token in tokens:
            offsets.append(self._offsets[index])
            self._offsets[index] += len(token)
        unknown = [None] * len(prompt_ids)
        return {
            "tokens": tokens,
            "token_logprobs": unknown + [_finite(e.logprob) for e in entries],
            "top_logprobs": unknown
            + [{self.token_text(t): _finite(lp) for t, lp in e.top.items()} for e in entries],
            "text_offset": offsets,
        }


class ChatFormat:
    """POST /v1/chat/completions: assistant messages, `logprobs.content` entries."""

    id_prefix = "chatcmpl-"
    object = "chat.completion"
    chunk_object = "chat.completion.chunk"

    def __init__(self, token_text: TokenText) -> None:
        self.token_text = token_text

    def opening_choices(self, num_choices: int) -> list[dict]:
        """Streams start by naming the speaker, as OpenAI's do."""
        delta = {"role": "assistant", "content": ""}
        return [
            {"index": i, "delta": delta, "logprobs": None, "finish_reason": None}
            for i in range(num_choices)
        ]

    def delta_choice(self, index: int, completion: CompletionOutput) -> dict:
        has_text = completion.new_text or not completion.finished
        return {
            "index": index,
            "delta": {"content": completion.new_text} if has_text else {},
            "logprobs": self._logprobs(completion.new_logprobs),
            "finish_reason": _reason(completion),
        }

    def final_choice(self, index: int, completion: CompletionOutput) -> dict:
        return {
            "index": index,
            "message": {"role": "assistant", "content": completion.text},
            "logprobs": self._logprobs(completion.logprobs),
            "finish_reason": _reason(completion),
        }

    def _entry(self, token_id: int, logprob: float) -> dict:
        token = self.token_text(token_id)
        return {"token": token, "logprob": _finite(logprob), "bytes": list(token.encode())}

    def _logprobs(self, entries: list[TokenLogprob] | None) -> dict | None:
        if entries is None:
            return None
        content = []
        for e in entries:
            entry = self._entry(e.token_id, e.logprob)
            entry["top_logprobs"] = [self._entry(t, lp) for t, lp in e.top.items()]
            content.append(entry)
        return {"content": content}


Format = CompletionFormat | ChatFormat
