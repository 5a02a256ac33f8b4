"""The shapes of OpenAI responses: completions and chat, whole and streamed."""

from __future__ import annotations

import math
import secrets
import string
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from pagoda_worker.engine.outputs import CompletionOutput, RequestOutput, TokenLogprob
from pagoda_worker.server.tool_parsers import Event, ParsedCall, ToolCallParser


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


def _called(completion: CompletionOutput) -> str | None:
    """A finished completion that made tool calls ends for them."""
    return None if completion.finish_reason is None else "tool_calls"


@dataclass
class Echo:
    """Completions' `echo`: each choice starts with its prompt, and with logprobs the prompt's
    tokens come first (the first one's logprob is null: nothing comes before it)."""

    texts: list[str]  # per prompt
    n: int  # choices per prompt


class CompletionFormat:
    """POST /v1/completions: `text` choices, legacy `logprobs` with tokens and offsets."""

    id_prefix = "cmpl-"
    object = "text_completion"
    chunk_object = "text_completion"

    def __init__(self, token_text: Callable[[int], str], echo: Echo | None = None) -> None:
        self.token_text = token_text
        self.echo = echo
        self._offsets: dict[int, int] = defaultdict(int)  # streamed text length per choice
        self._echoed: set[int] = set()  # streamed choices whose prompt went out already

    def opening_choices(self, num_choices: int) -> list[dict]:
        return []

    def delta_choice(
        self, index: int, completion: CompletionOutput, request: RequestOutput
    ) -> dict:
        first = index not in self._echoed  # echo goes out with a choice's first chunk
        self._echoed.add(index)
        prompt = self._prompt_entries(request) if first else []
        return {
            "index": index,
            "text": (self._echo_text(index) if first else "") + completion.new_text,
            "logprobs": self._logprobs(index, completion.new_logprobs, prompt),
            "finish_reason": _reason(completion),
        }

    def final_choice(
        self, index: int, completion: CompletionOutput, request: RequestOutput
    ) -> dict:
        prompt = self._prompt_entries(request)
        return {
            "index": index,
            "text": self._echo_text(index) + completion.text,
            "logprobs": self._logprobs(index, completion.logprobs, prompt),
            "finish_reason": _reason(completion),
        }

    def _echo_text(self, index: int) -> str:
        return self.echo.texts[index // self.echo.n] if self.echo else ""

    def _prompt_entries(self, request: RequestOutput) -> list[tuple[int, TokenLogprob | None]]:
        """Echo with logprobs: the prompt's tokens come first (the first has no logprob)."""
        if self.echo is None or request.prompt_logprobs is None:
            return []
        return list(zip(request.prompt_token_ids, request.prompt_logprobs, strict=True))

    def _logprobs(
        self,
        index: int,
        entries: list[TokenLogprob] | None,
        prompt: list[tuple[int, TokenLogprob | None]],
    ) -> dict | None:
        if entries is None:
            return None
        scored = prompt + [(e.token_id, e) for e in entries]
        tokens = [self.token_text(token_id) for token_id, _ in scored]
        offsets = []
        for token in tokens:
            offsets.append(self._offsets[index])
            self._offsets[index] += len(token)
        return {
            "tokens": tokens,
            "token_logprobs": [_finite(e.logprob) if e else None for _, e in scored],
            "top_logprobs": [
                {self.token_text(t): _finite(lp) for t, lp in e.top.items()} if e else None
                for _, e in scored
            ],
            "text_offset": offsets,
        }


CALL_ID_ALPHABET = string.ascii_letters + string.digits


def tool_call(call: ParsedCall) -> dict:
    """A call as OpenAI shows it: a fresh id, the arguments as JSON text."""
    suffix = "".join(secrets.choice(CALL_ID_ALPHABET) for _ in range(24))
    return {
        "id": "call_" + suffix,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


def _split(events: list[Event]) -> tuple[str, list[ParsedCall]]:
    content = "".join(e for e in events if isinstance(e, str))
    return content, [e for e in events if isinstance(e, ParsedCall)]


class ChatFormat:
    """POST /v1/chat/completions: assistant messages, `logprobs.content` entries, and with a
    tool-call parser the calls it reads in each completion (finish_reason "tool_calls")."""

    id_prefix = "chatcmpl-"
    object = "chat.completion"
    chunk_object = "chat.completion.chunk"

    def __init__(
        self, token_text: Callable[[int], str], parser: Callable[[], ToolCallParser] | None = None
    ) -> None:
        self.token_text = token_text
        self.parser = parser
        self._parsers: dict[int, ToolCallParser] = {}  # streamed choice -> its parser
        self._calls_sent: dict[int, int] = defaultdict(int)  # streamed choice -> calls so far

    def opening_choices(self, num_choices: int) -> list[dict]:
        """Streams start by naming the speaker, as OpenAI's do."""
        delta = {"role": "assistant", "content": ""}
        return [
            {"index": i, "delta": delta, "logprobs": None, "finish_reason": None}
            for i in range(num_choices)
        ]

    def delta_choice(
        self, index: int, completion: CompletionOutput, request: RequestOutput
    ) -> dict:
        content, calls = self._read(index, completion)
        delta: dict = {}
        if content or not (calls or completion.finished):
            delta["content"] = content
        if calls:
            first = self._calls_sent[index]
            delta["tool_calls"] = [
                {"index": first + i} | tool_call(call) for i, call in enumerate(calls)
            ]
            self._calls_sent[index] += len(calls)
        called = self._calls_sent[index] > 0
        return {
            "index": index,
            "delta": delta,
            "logprobs": self._logprobs(completion.new_logprobs),
            "finish_reason": _called(completion) if called else _reason(completion),
        }

    def _read(self, index: int, completion: CompletionOutput) -> tuple[str, list[ParsedCall]]:
        """The content and the calls in a streamed completion's new text."""
        if self.parser is None:
            return completion.new_text, []
        if index not in self._parsers:
            self._parsers[index] = self.parser()
        parser = self._parsers[index]
        events = parser.feed(completion.new_text)
        if completion.finished:
            events += parser.finish()
        return _split(events)

    def final_choice(
        self, index: int, completion: CompletionOutput, request: RequestOutput
    ) -> dict:
        message: dict = {"role": "assistant", "content": completion.text}
        reason = _reason(completion)
        if self.parser is not None:
            parser = self.parser()
            content, calls = _split(parser.feed(completion.text) + parser.finish())
            if calls:  # without calls, the content is the whole text
                message["content"] = content or None
                message["tool_calls"] = [tool_call(call) for call in calls]
                reason = _called(completion)
        return {
            "index": index,
            "message": message,
            "logprobs": self._logprobs(completion.logprobs),
            "finish_reason": reason,
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
