"""What a request's routing rests on: its session when the client names one, else its prompt.

A session (`x-session-id` header, or the body's `user` field) keeps a client on one pod: its key
places it on the hash ring. Without one, the prompt's text does both jobs: its blocks' hashes find
the pod that already holds the longest part of it (prefix_index.py), and its first `prefix_chars`
characters place a prompt nobody holds yet on the ring, so new conversations that share a system
prompt start where it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .prefix_index import block_hashes

SESSION_HEADER = "x-session-id"
PREFIX_CHARS = 256


@dataclass(frozen=True)
class Affinity:
    key: str | None  # the ring key: "session:<id>", or the prompt's beginning; None: no prompt
    blocks: tuple[int, ...] = ()  # the prompt's prefix hashes; none for a session


def affinity_of(body: dict, headers, prefix_chars: int = PREFIX_CHARS) -> Affinity:
    session = headers.get(SESSION_HEADER) or body.get("user")
    if isinstance(session, str) and session:
        return Affinity("session:" + session)
    text = prompt_text(body)
    if not text:
        return Affinity(None)
    return Affinity("prompt:" + text[:prefix_chars], block_hashes(text))


def prompt_text(body: dict) -> str:
    """The prompt as text whose every prefix is a prefix of the next turn's: a chat's messages
    one after another, a completion's prompt (a batch's first one; token ids as numbers)."""
    if isinstance(messages := body.get("messages"), list):
        return "".join(_message_text(m) for m in messages)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str | list):
        prompt = prompt[0]  # a batch: its first prompt
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):  # token ids
        return " ".join(map(str, prompt))
    return ""


def _message_text(message) -> str:
    if not isinstance(message, dict):
        return json.dumps(message, sort_keys=True) + "\n"
    content = message.get("content")
    if not isinstance(content, str):
        content = json.dumps(content, sort_keys=True)
    return f"<{message.get('role')}>{content}\n"
