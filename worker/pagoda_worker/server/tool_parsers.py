"""Tool calls out of a completion's text, as it streams: each parser is fed the text piece by
piece and gives back, in order, content (str) and calls (ParsedCall), each call once it is
complete. Fed all at once or in any pieces, a parser gives the same content and calls.

Whitespace around calls is trimmed, so "Sure.\\n<tool_call>..." gives the content "Sure.";
a completion without calls comes back unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ParsedCall:
    name: str
    arguments: str  # a JSON object, as text


Event = str | ParsedCall


class ToolCallParser(Protocol):
    def feed(self, text: str) -> list[Event]: ...

    def finish(self) -> list[Event]: ...


def call_from(value) -> ParsedCall | None:
    """{"name": ..., "arguments": {...}} (or Llama's "parameters") -> a call; None if not one."""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    if not isinstance(arguments, dict):
        return None
    return ParsedCall(value["name"], json.dumps(arguments, ensure_ascii=False))


def _call_from_text(text: str) -> ParsedCall | None:
    try:
        return call_from(json.loads(text))
    except ValueError:
        return None


def _partial_marker(text: str, marker: str) -> int:
    """How many characters at the end of `text` could begin `marker`: held back until the
    next piece says whether the marker comes."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0


class _Events:
    """Content and calls in order. Whitespace before a call is dropped, and so is whitespace
    after one unless more content follows it; a completion without calls stays as it is."""

    def __init__(self) -> None:
        self.pending: list[Event] = []
        self.held_space = ""  # whitespace that is content only if more content follows
        self.saw_call = False
        self.saw_content = False

    def text(self, text: str) -> None:
        body = text.rstrip()
        if not body:
            self.held_space += text
            return
        piece = self.held_space + body
        if self.saw_call and not self.saw_content:
            piece = piece.lstrip()  # content that starts after a call
        self.pending.append(piece)
        self.saw_content = True
        self.held_space = text[len(body) :]

    def call(self, call: ParsedCall) -> None:
        self.pending.append(call)
        self.held_space = ""
        self.saw_call = True

    def end(self) -> None:
        if self.held_space and not self.saw_call:
            self.pending.append(self.held_space)
        self.held_space = ""

    def take(self) -> list[Event]:
        taken, self.pending = self.pending, []
        return taken


class HermesParser:
    """Hermes / Qwen: calls anywhere in the text, each `<tool_call>{"name": ..., "arguments":
    {...}}</tool_call>`. A call that is not such JSON stays in the content as written."""

    START, END = "<tool_call>", "</tool_call>"

    def __init__(self) -> None:
        self.events = _Events()
        self.buffer = ""
        self.in_call = False

    def feed(self, text: str) -> list[Event]:
        self.buffer += text
        while self._step():
            pass
        return self.events.take()

    def _step(self) -> bool:
        """Consumes one piece of the buffer; False when it needs more text."""
        marker = self.END if self.in_call else self.START
        at = self.buffer.find(marker)
        if at < 0:
            if not self.in_call:
                ready = len(self.buffer) - _partial_marker(self.buffer, self.START)
                self.events.text(self.buffer[:ready])
                self.buffer = self.buffer[ready:]
            return False
        piece, self.buffer = self.buffer[:at], self.buffer[at + len(marker) :]
        if self.in_call:
            call = _call_from_text(piece)
            if call:
                self.events.call(call)
            else:
                self.events.text(self.START + piece + self.END)
        else:
            self.events.text(piece)
        self.in_call = not self.in_call
        return True

    def finish(self) -> list[Event]:
        if self.in_call:  # the model stopped before the closing tag
            call = _call_from_text(self.buffer)
            if call:
                self.events.call(call)
            else:
                self.events.text(self.START + self.buffer)
        else:
            self.events.text(self.buffer)
        self.buffer = ""
        self.events.end()
        return self.events.take()


class Llama3JSONParser:
    """Llama 3.1 / 3.2: the completion starts with the calls, `{"name": ..., "parameters":
    {...}}`, optionally after `<|python_tag|>`, several separated by `;`. A completion that
    starts otherwise is content, and so is whatever follows the last call."""

    PYTHON_TAG = "<|python_tag|>"

    def __init__(self) -> None:
        self.events = _Events()
        self.buffer = ""
        self.state = "start"  # start -> calls -> text, or start -> text
        self.skipped = ""  # the whitespace and tag before the first call
        self.needs_separator = False
        self.decoder = json.JSONDecoder()

    def feed(self, text: str) -> list[Event]:
        self.buffer += text
        if self.state == "start":
            self._begin()
        if self.state == "calls" and "}" in text:  # no call can end without a brace
            self._read_calls()
        if self.state == "text":
            self.events.text(self.buffer)
            self.buffer = ""
        return self.events.take()

    def _begin(self) -> None:
        head = self.buffer.lstrip()
        if head.startswith(self.PYTHON_TAG):
            head = head[len(self.PYTHON_TAG) :].lstrip()
        elif not head or self.PYTHON_TAG.startswith(head):
            return  # too early to tell
        if head.startswith("{"):
            self.state = "calls"
            self.skipped = self.buffer[: len(self.buffer) - len(head)]
            self.buffer = head
        elif head:
            self.state = "text"

    def _read_calls(self) -> None:
        while rest := self.buffer.lstrip():
            if self.needs_separator:
                if not rest.startswith(";"):
                    return self._give_up(rest)
                self.buffer, self.needs_separator = rest[1:], False
                continue
            if not rest.startswith("{"):
                return self._give_up(rest)
            try:
                value, end = self.decoder.raw_decode(rest)
            except ValueError:
                return None  # not complete yet, or never: finish() tells
            call = call_from(value)
            if call is None:
                return self._give_up(rest)
            self.events.call(call)
            self.buffer, self.needs_separator = rest[end:], True
        return None

    def _give_up(self, rest: str) -> None:
        """What is left is content; with no call before it, from the very start."""
        self.state = "text"
        self.buffer = rest if self.events.saw_call else self.skipped + rest

    def finish(self) -> list[Event]:
        if self.state == "calls":
            self._read_calls()
            if self.state == "calls" and self.buffer.strip():
                self._give_up(self.buffer.lstrip())
        if self.state != "calls":
            self.events.text(self.buffer)
        self.buffer = ""
        self.events.end()
        return self.events.take()


class ForcedCallsParser:
    """tool_choice required or named: the grammar made the completion a JSON array of
    {"name", "arguments"} objects; the calls come out once it is complete. A completion cut
    short (max_tokens) is content."""

    def __init__(self) -> None:
        self.buffer = ""

    def feed(self, text: str) -> list[Event]:
        self.buffer += text
        return []

    def finish(self) -> list[Event]:
        try:
            calls = [call_from(item) for item in json.loads(self.buffer)]
        except (ValueError, TypeError):
            calls = [None]
        complete: list[Event] = [call for call in calls if call is not None]
        if calls and len(complete) == len(calls):
            return complete
        return [self.buffer] if self.buffer else []


LLAMA_MODEL_TYPES = {"llama"}


def parser_for(model_type: str | None) -> type[HermesParser] | type[Llama3JSONParser]:
    """The tool-call format of `auto`, by the model's family: Llama's JSON for llama models,
    Hermes (Qwen's) for the rest."""
    return Llama3JSONParser if model_type in LLAMA_MODEL_TYPES else HermesParser
