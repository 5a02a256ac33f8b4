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


def max_prompt_chars(tokenizer, max_model_len: int) -> int:
    """No text longer than this fits the context window: every token stands for at most as
    many characters as its longest vocabulary entry (byte-level and SentencePiece entries
    spell each character or byte with at least one character)."""
    longest = max(len(token) for token in tokenizer.get_vocab())
    return max_model_len * longest


def check_prompt_chars(num_chars: int, limit: int, param: str) -> None:
    """Refuse, before tokenizing it, a text that cannot fit the context window."""
    if num_chars > limit:
        raise APIError(
            400,
            f"{param} has {num_chars} characters; no text longer than {limit} characters fits "
            "this model's context window",
            param=param,
            code="context_length_exceeded",
        )


def check_completion_prompt(prompt, max_chars: int) -> None:
    """Cheap checks on the event loop, before any tokenizing."""
    if isinstance(prompt, str):
        prompt = [prompt]
    if not prompt:
        raise APIError(400, "prompt must not be empty", param="prompt")
    if len(prompt) > MAX_PROMPTS and not isinstance(prompt[0], int):
        raise APIError(400, f"at most {MAX_PROMPTS} prompts in one request", param="prompt")
    if isinstance(prompt[0], str):
        for i, text in enumerate(prompt):
            check_prompt_chars(
                len(text), max_chars, f"prompt[{i}]" if len(prompt) > 1 else "prompt"
            )


def completion_prompts(prompt, tokenizer) -> list[list[int]]:
    """A string, a list of strings, token ids or a list of token-id lists -> token-id lists.

    Token ids are checked by the engine (non-empty, inside the vocabulary)."""
    if isinstance(prompt, str):
        return [tokenizer.encode(prompt)]
    if isinstance(prompt[0], str):
        return [tokenizer.encode(text) for text in prompt]
    return [prompt] if isinstance(prompt[0], int) else prompt


def prompt_texts(prompt, token_ids: list[list[int]], tokenizer) -> list[str]:
    """Each prompt as text, for echo: as the client wrote it, or its tokens decoded."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt[0], str):
        return list(prompt)
    return [tokenizer.decode(ids, skip_special_tokens=True) for ids in token_ids]


def check_chat_messages(messages: list[ChatMessage], max_chars: int) -> None:
    if not messages:
        raise APIError(400, "messages must not be empty", param="messages")
    check_prompt_chars(sum(len(m.text) for m in messages), max_chars, "messages")


def chat_prompt(messages: list[ChatMessage], tokenizer) -> list[int]:
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
