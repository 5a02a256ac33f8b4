"""A request's routing key: its session when it names one, else the beginning of its prompt."""

from __future__ import annotations

from multidict import CIMultiDict

from gateway.affinity import routing_key

NO_HEADERS = CIMultiDict()
SYSTEM = {"role": "system", "content": "You are a terse assistant. " * 20}


def chat(*turns: tuple[str, str]) -> dict:
    return {"messages": [SYSTEM, *({"role": r, "content": c} for r, c in turns)]}


def test_the_session_header_beats_user_and_user_beats_the_prompt():
    body = chat(("user", "hello")) | {"user": "alice"}
    headers = CIMultiDict({"X-Session-Id": "s-42"})
    assert routing_key(body, headers) == "session:s-42"
    assert routing_key(body, NO_HEADERS) == "session:alice"
    assert routing_key(chat(("user", "hello")), NO_HEADERS).startswith("chat:")


def test_an_empty_or_non_string_session_falls_back_to_the_prompt():
    prompt_key = routing_key({"prompt": "Once upon a time"}, NO_HEADERS)
    for body, headers in [
        ({"prompt": "Once upon a time", "user": ""}, NO_HEADERS),
        ({"prompt": "Once upon a time", "user": 7}, NO_HEADERS),
        ({"prompt": "Once upon a time"}, CIMultiDict({"x-session-id": ""})),
    ]:
        assert routing_key(body, headers) == prompt_key == "prompt:Once upon a time"


def test_later_turns_of_one_conversation_share_its_key():
    first = chat(("user", "Tell me about tides."))
    later = chat(
        ("user", "Tell me about tides."),
        ("assistant", "The moon pulls the sea."),
        ("user", "And the sun?"),
    )
    assert routing_key(first, NO_HEADERS) == routing_key(later, NO_HEADERS)


def test_conversations_with_different_first_user_messages_differ():
    tides = chat(("user", "Tell me about tides."))
    stars = chat(("user", "Tell me about stars."))
    assert routing_key(tides, NO_HEADERS) != routing_key(stars, NO_HEADERS)


def test_each_opening_message_is_cut_to_prefix_chars():
    def opening(tail: str) -> dict:
        system = {"role": "system", "content": "S" * 16 + tail}
        return {"messages": [system, {"role": "user", "content": "U" * 16 + tail}]}

    def key(body: dict, prefix_chars: int) -> str | None:
        return routing_key(body, NO_HEADERS, prefix_chars)

    # The same first 16 characters of the system prompt and of the user turn: the same key.
    assert key(opening("a"), 16) == key(opening("b"), 16)
    assert key(opening("a"), 16) == f"chat:system:{'S' * 16}\nuser:{'U' * 16}"
    assert key(opening("a"), 17) != key(opening("b"), 17)


def test_chat_content_parts_count_as_content():
    parts = [{"type": "text", "text": "Tell me about tides."}]
    tides = {"messages": [{"role": "user", "content": parts}]}
    stars = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Stars?"}]}]}
    assert routing_key(tides, NO_HEADERS) != routing_key(stars, NO_HEADERS)


def test_a_completion_prompt_keys_on_its_first_characters():
    long = "Once upon a time " * 50
    assert routing_key({"prompt": long}, NO_HEADERS) == "prompt:" + long[:256]
    assert routing_key({"prompt": long + "x"}, NO_HEADERS) == routing_key(
        {"prompt": long}, NO_HEADERS
    )


def test_a_batch_keys_on_its_first_prompt():
    assert routing_key({"prompt": ["first", "second"]}, NO_HEADERS) == "prompt:first"


def test_token_id_prompts_key_on_their_first_ids():
    ids = list(range(100))
    assert routing_key({"prompt": ids}, NO_HEADERS, prefix_chars=16) == "tokens:[0, 1, 2, 3]"
    assert routing_key({"prompt": [ids]}, NO_HEADERS, prefix_chars=16) == "tokens:[0, 1, 2, 3]"


def test_no_prompt_gives_no_key():
    for body in [{}, {"prompt": ""}, {"prompt": []}, {"messages": []}, {"messages": ["text"]}]:
        assert routing_key(body, NO_HEADERS) is None, body
