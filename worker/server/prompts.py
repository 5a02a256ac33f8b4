"""Prompts to token ids: completion prompts, chat templates, and the context-window check."""

from __future__ import annotations

from worker.server.errors import APIError
from worker.server.protocol import ChatMessage

MAX_PROMPTS = 2048  # prompts in one completions request, as OpenAI caps it

# For models whose tokenizer has no chat template (stories260K, base models): one line per
# message, "Role: content", then "Assistant:" for the model to continue.
PLAIN_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}{{ m.role | capitalize }}: {{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def completion_prompts(prompt, tokenizer) -> list[list[int]]:
    """A string, a list of strings, token ids or a list of token-id lists -> token-id lists.

    Token ids are checked by the engine (non-empty, inside the vocabulary)."""
    if isinstance(prompt, str):
        return [tokenizer.encode(prompt)]
    if not prompt:
        raise APIError(400, "prompt must not be empty", param="prompt")
    if len(prompt) > MAX_PROMPTS and not isinstance(prompt[0], int):
        raise APIError(400, f"at most {MAX_PROMPTS} prompts in one request", param="prompt")
    if isinstance(prompt[0], str):
        return [tokenizer.encode(text) for text in prompt]
    return [prompt] if isinstance(prompt[0], int) else prompt


def chat_prompt(messages: list[ChatMessage], tokenizer) -> list[int]:
    if not messages:
        raise APIError(400, "messages must not be empty", param="messages")
    conversation = [{"role": m.role, "content": m.text} for m in messages]
    text = tokenizer.apply_chat_template(
        conversation,
        chat_template=None if tokenizer.chat_template else PLAIN_CHAT_TEMPLATE,
        add_generation_prompt=True,
        tokenize=False,
    )
    return tokenizer.encode(text, add_special_tokens=False)  # the template has the BOS


def check_context(
    prompt_len: int, max_tokens: int, max_model_len: int, prompt_param: str, max_tokens_param: str
) -> None:
    if prompt_len + max_tokens <= max_model_len:
        return
    param = prompt_param if prompt_len >= max_model_len else max_tokens_param
    raise APIError(
        400,
        f"This model's maximum context length is {max_model_len} tokens. However, you requested "
        f"{prompt_len + max_tokens} tokens ({prompt_len} in the prompt, {max_tokens} for the "
        f"completion). Please reduce the prompt or {max_tokens_param}.",
        param=param,
        code="context_length_exceeded",
    )
