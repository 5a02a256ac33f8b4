"""The routing key of a request: its session when the client names one, else its prompt's
first characters.

A session (`x-session-id` header, or the body's `user` field) keeps a client on one pod. Without
one, the key is the beginning of the prompt: for a chat, the messages up to the first user turn,
each cut to `prefix_chars` (the system prompt and the conversation's opening, which every later
turn of that conversation repeats); for a completion, the prompt's first `prefix_chars`. Requests
that share that beginning share KV blocks, so they go where those blocks already are.
"""

from __future__ import annotations

import json

SESSION_HEADER = "x-session-id"
PREFIX_CHARS = 256


def routing_key(body: dict, headers, prefix_chars: int = PREFIX_CHARS) -> str | None:
    session = headers.get(SESSION_HEADER) or body.get("user")
    if isinstance(session, str) and session:
        return "session:" + session
    if isinstance(messages := body.get("messages"), list):
        return _chat_prefix(messages, prefix_chars)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str | list):
        prompt = prompt[0]  # a batch: its first prompt
    if isinstance(prompt, str) and prompt:
        return "prompt:" + prompt[:prefix_chars]
    if isinstance(prompt, list) and prompt:  # token ids
        return "tokens:" + json.dumps(prompt[: prefix_chars // 4])
    return None


def _chat_prefix(messages: list, prefix_chars: int) -> str | None:
    parts = []
    for message in messages:
        if not isinstance(message, dict):
            break
        content = message.get("content")
        if not isinstance(content, str):
            content = json.dumps(content, sort_keys=True)
        parts.append(f"{message.get('role')}:{content[:prefix_chars]}")
        if message.get("role") == "user":
            break
    return "chat:" + "\n".join(parts) if parts else None
