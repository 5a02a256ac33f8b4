"""Prompts to token ids: completion prompts, chat templates, and the context-window check."""

from __future__ import annotations

import json

from pagoda_worker.engine.errors import ContextLengthExceeded, check_context_length
from pagoda_worker.server.errors import APIError
from pagoda_worker.server.protocol import ChatMessage

MAX_PROMPTS = 2048  # prompts in one completions request, as OpenAI caps it

# For models whose tokenizer has no chat template (stories260K, base models): the tools first,
# one JSON line each, then one line per message, "Role: content", an assistant's tool calls
# and tool results on lines of their own, then "Assistant:" for the model to continue.
PLAIN_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for t in tools or [] %}Tool: {{ t.function | tojson }}\n{% endfor %}"
    "{% for m in messages %}"
    "{% if m.role == 'tool' %}Tool result ({{ m.tool_call_id }}): {{ m.content }}\n"
    "{% elif m.content or not m.tool_calls %}{{ m.role | capitalize }}: {{ m.content }}\n"
    "{% endif %}"
    "{% for c in m.tool_calls or [] %}"
    "Tool call ({{ c.id }}): {{ {'name': c.function.name, 'arguments': c.function.arguments}"
    " | tojson }}\n"
    "{% endfor %}"
    "{% endfor %}"
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
    for i, message in enumerate(messages):
        _check_tool_fields(message, f"messages[{i}]")
    check_prompt_chars(sum(len(m.text) for m in messages), max_chars, "messages")


def _check_tool_fields(message: ChatMessage, where: str) -> None:
    if message.role == "tool" and message.tool_call_id is None:
        param = f"{where}.tool_call_id"
        raise APIError(
            400, f"{param} is required: a tool message answers the call of that id", param=param
        )
    if message.tool_calls is not None and message.role != "assistant":
        param = f"{where}.tool_calls"
        raise APIError(400, f"{param}: only assistant messages carry tool calls", param=param)
    for j, call in enumerate(message.tool_calls or []):
        try:
            arguments = json.loads(call.function.arguments)
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            param = f"{where}.tool_calls[{j}].function.arguments"
            raise APIError(400, f"{param} must be a JSON object, in a string", param=param)


def _template_message(message: ChatMessage) -> dict:
    """A message as Hugging Face chat templates expect it: a call's arguments as a dict."""
    rendered: dict = {"role": message.role, "content": message.text}
    if message.tool_calls:
        rendered["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {
                    "name": call.function.name,
                    "arguments": json.loads(call.function.arguments),
                },
            }
            for call in message.tool_calls
        ]
    if message.role == "tool":
        rendered["tool_call_id"] = message.tool_call_id
    return rendered


def chat_prompt(
    messages: list[ChatMessage], tokenizer, tools: list[dict] | None = None
) -> list[int]:
    """`tools`: [{"type": "function", "function": {...}}], for templates that show them."""
    text = tokenizer.apply_chat_template(
        [_template_message(m) for m in messages],
        tools=tools,
        chat_template=None if tokenizer.chat_template else PLAIN_CHAT_TEMPLATE,
        add_generation_prompt=True,
        tokenize=False,
    )
    return tokenizer.encode(text, add_special_tokens=False)  # the template has the BOS


def check_context(
    prompt_len: int, max_tokens: int, max_model_len: int, prompt_param: str, max_tokens_param: str
) -> None:
    """The engine's context-window check, refused in OpenAI's words before the engine sees it."""
    try:
        check_context_length(prompt_len, max_tokens, max_model_len)
    except ContextLengthExceeded as e:
        param = prompt_param if prompt_len >= max_model_len else max_tokens_param
        raise APIError(
            400,
            f"This model's maximum context length is {max_model_len} tokens. However, you "
            f"requested {prompt_len + max_tokens} tokens ({prompt_len} in the prompt, "
            f"{max_tokens} for the completion). Please reduce the prompt or {max_tokens_param}.",
            param=param,
            code="context_length_exceeded",
        ) from e
