"""Prompt/completion audit log: off by default; when on, the server's own API keys (wherever
they appear, whatever they look like), common secrets and personal data are redacted before
anything is written."""

from __future__ import annotations

import json
import logging
import re

audit_log = logging.getLogger("pagoda.audit")

_REDACTIONS = [
    (re.compile(r"(?i)\bbearer\s+[\w.~+/=-]+"), "Bearer [REDACTED]"),
    (re.compile(r"\b(?:sk|pk|rk|api|key|token)[-_][A-Za-z0-9_-]{12,}"), "[SECRET]"),
    (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "[EMAIL]"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b"), "[IP]"),
    (re.compile(r"\b\d(?:[ -]?\d){12,18}\b"), "[CARD]"),
    (re.compile(r"\+?(?:\d{1,3}[ .-]?)?\(?\d{2,4}\)?[ .-]?\d{3,4}[ .-]?\d{3,4}\b"), "[PHONE]"),
]


def redact(text: str) -> str:
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


class AuditLog:
    def __init__(self, enabled: bool, api_keys: list[str] | None = None) -> None:
        self.enabled = enabled
        # Longest first, so a key that contains another is replaced whole.
        self._api_keys = sorted(set(api_keys or []), key=len, reverse=True)

    def redact(self, text: str) -> str:
        for key in self._api_keys:
            text = text.replace(key, "[API_KEY]")
        return redact(text)

    def record(self, request_id: str, endpoint: str, prompt: str, completions: list[str]) -> None:
        if not self.enabled:
            return
        entry = {
            "request_id": request_id,
            "endpoint": endpoint,
            "prompt": self.redact(prompt),
            "completions": [self.redact(text) for text in completions],
        }
        audit_log.info(json.dumps(entry, ensure_ascii=False))
