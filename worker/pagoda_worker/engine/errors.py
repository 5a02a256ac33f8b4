"""The engine's refusal of a request, and the context-window check the server shares.

Every check that refuses a request (sampling parameters, the prompt, the context window, a
grammar that does not compile) raises InvalidRequest: the field at fault and why. It crosses
the engine process's boundary as those two strings, and the server maps it to a 400 naming
its own API field. Torch-free: the server imports it.
"""

from __future__ import annotations


class InvalidRequest(ValueError):
    """The request cannot be served as asked; `field` names the parameter at fault."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class ContextLengthExceeded(InvalidRequest):
    """The prompt and max_tokens together do not fit the context window."""

    def __init__(self, prompt_len: int, max_tokens: int, max_model_len: int) -> None:
        total = prompt_len + max_tokens
        super().__init__(
            "max_tokens",
            f"prompt ({prompt_len} tokens) + max_tokens ({max_tokens}) = {total} exceeds the "
            f"context window of {max_model_len} tokens",
        )


def check_context_length(prompt_len: int, max_tokens: int, max_model_len: int) -> None:
    """Every token of the prompt and of the completion must fit the context window."""
    if prompt_len + max_tokens > max_model_len:
        raise ContextLengthExceeded(prompt_len, max_tokens, max_model_len)
