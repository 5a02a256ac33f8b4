"""What the gateway reads in the events it passes through: nothing but what it must.

An event is one `data: ...` line and its blank line. The gateway looks inside only to tell an
opening chunk (the assistant's role, no token yet) from the first token, to find the usage
chunk, and to count chunks when a stream ends without usage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True)
class Event:
    raw: bytes

    def payload(self) -> dict | None:
        data = self.raw.strip()
        if not data.startswith(b"data: {"):
            return None
        try:
            found = json.loads(data[len(b"data: ") :])
        except ValueError:
            return None
        return found if isinstance(found, dict) else None

    @property
    def done(self) -> bool:
        return self.raw == DONE

    def carries_usage(self) -> bool:
        return b'"usage":{' in self.raw or b'"usage": {' in self.raw


def is_opening(payload: dict | None) -> bool:
    """A chunk with choices that carry no token yet (the chat stream's role chunk)."""
    if payload is None or "error" in payload or not payload.get("choices"):
        return False
    for choice in payload["choices"]:
        delta = choice.get("delta") or {}
        if choice.get("finish_reason") or choice.get("text") or delta.get("content"):
            return False
        if delta.get("tool_calls") or delta.get("reasoning_content"):
            return False
    return True


def error_event(message: str, error_type: str = "service_unavailable") -> bytes:
    body = {"error": {"message": message, "type": error_type, "param": None, "code": None}}
    return b"data: " + json.dumps(body).encode() + b"\n\n" + DONE
