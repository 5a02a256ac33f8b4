"""Chat prompts: the tokenizer's own template when it has one, the plain one otherwise."""

from __future__ import annotations

import pytest
from pagoda_worker.server.errors import APIError
from pagoda_worker.server.prompts import (
    chat_prompt,
    check_completion_prompt,
    check_context,
    completion_prompts,
    max_prompt_chars,
)
from pagoda_worker.server.protocol import ChatMessage
from transformers import AutoTokenizer

MESSAGES = [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Hi")]


@pytest.fixture
def tokenizer(stories_dir):
    return AutoTokenizer.from_pretrained(stories_dir)


def test_plain_template_for_a_tokenizer_without_one(tokenizer):
    assert tokenizer.chat_template is None
    ids = chat_prompt(MESSAGES, tokenizer)
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids[1:]) == "System: Be brief.\nUser: Hi\nAssistant:"


def test_the_tokenizers_own_template_wins(tokenizer):
    tokenizer.chat_template = (
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    ids = chat_prompt(MESSAGES, tokenizer)
    assert tokenizer.decode(ids) == "<system>Be brief.<user>Hi<assistant>"


def test_text_parts_are_joined(tokenizer):
    parts = [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]
    message = ChatMessage.model_validate({"role": "user", "content": parts})
    assert tokenizer.decode(chat_prompt([message], tokenizer)).endswith(
        "User: Hello there\nAssistant:"
    )


def test_completion_prompts_in_every_form(tokenizer):
    once = tokenizer.encode("Once")
    assert completion_prompts("Once", tokenizer) == [once]
    assert completion_prompts(["Once", "Once"], tokenizer) == [once, once]
    assert completion_prompts([1, 2, 3], tokenizer) == [[1, 2, 3]]
    assert completion_prompts([[1], [2, 3]], tokenizer) == [[1], [2, 3]]
    with pytest.raises(APIError, match="prompt must not be empty"):
        check_completion_prompt([], max_chars=100)


def test_no_text_over_the_character_bound_fits_the_context(tokenizer):
    """The bound is safe: the most characters any token stands for, times the context."""
    limit = max_prompt_chars(tokenizer, max_model_len=512)
    longest = max(tokenizer.get_vocab(), key=len).replace("\u2581", " ")
    densest = longest * (limit // len(longest))  # the most text per token there is
    assert len(tokenizer.encode(densest, add_special_tokens=False)) >= 512 - 1
    check_completion_prompt(densest, limit)
    with pytest.raises(APIError, match="characters") as refused:
        check_completion_prompt(["ok", "x" * (limit + 1)], limit)
    assert refused.value.param == "prompt[1]"


def test_the_context_check_refuses_in_openais_words():
    check_context(500, 12, 512, "messages", "max_tokens")  # exactly the context window
    with pytest.raises(APIError) as refused:
        check_context(500, 13, 512, "messages", "max_completion_tokens")
    assert (refused.value.status, refused.value.code) == (400, "context_length_exceeded")
    assert refused.value.param == "max_completion_tokens"
    assert refused.value.message == (
        "This model's maximum context length is 512 tokens. However, you requested 513 tokens "
        "(500 in the prompt, 13 for the completion). Please reduce the prompt or "
        "max_completion_tokens."
    )
    with pytest.raises(APIError) as refused:  # the prompt alone fills the window
        check_context(512, 1, 512, "messages", "max_tokens")
    assert refused.value.param == "messages"
