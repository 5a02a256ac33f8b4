"""What a request's routing rests on: its session when it names one, else its prompt's text (its
beginning for the ring, its block hashes for the prefix index)."""

from __future__ import annotations

from multidict import CIMultiDict
from pagoda_gateway.affinity import Affinity, affinity_of, prompt_text
from pagoda_gateway.prefix_index import BLOCK_CHARS, block_hashes

NO_HEADERS = CIMultiDict()
SYSTEM = {"role": "system", "content": "You are a terse assistant. " * 20}


def chat(*turns: tuple[str, str]) -> dict:
    return {"messages": [SYSTEM, *({"role": r, "content": c} for r, c in turns)]}


def test_the_session_header_beats_user_and_user_beats_the_prompt():
    body = chat(("user", "hello")) | {"user": "alice"}
    headers = CIMultiDict({"X-Session-Id": "s-42"})
    assert affinity_of(body, headers) == Affinity("session:s-42")
    assert affinity_of(body, NO_HEADERS) == Affinity("session:alice")
    assert affinity_of(chat(("user", "hello")), NO_HEADERS).key.startswith("prompt:<system>")


def test_an_empty_or_non_string_session_falls_back_to_the_prompt():
    by_prompt = affinity_of({"prompt": "Once upon a time"}, NO_HEADERS)
    assert by_prompt.key == "prompt:Once upon a time"
    for body, headers in [
        ({"prompt": "Once upon a time", "user": ""}, NO_HEADERS),
        ({"prompt": "Once upon a time", "user": 7}, NO_HEADERS),
        ({"prompt": "Once upon a time"}, CIMultiDict({"x-session-id": ""})),
    ]:
        assert affinity_of(body, headers) == by_prompt


def test_each_turn_of_a_conversation_extends_the_last_ones_text_and_blocks():
    first = chat(("user", "Tell me about tides."))
    later = chat(
        ("user", "Tell me about tides."),
        ("assistant", "The moon pulls the sea."),
        ("user", "And the sun?"),
    )
    assert prompt_text(later).startswith(prompt_text(first))
    short, long = affinity_of(first, NO_HEADERS), affinity_of(later, NO_HEADERS)
    assert long.blocks[: len(short.blocks)] == short.blocks
    assert short.key == long.key  # the same beginning: the same place on the ring


def test_prompts_that_share_a_system_prompt_share_its_blocks_and_ring_key():
    tides = affinity_of(chat(("user", "Tell me about tides. " * 10)), NO_HEADERS)
    stars = affinity_of(chat(("user", "Tell me about stars. " * 10)), NO_HEADERS)
    shared = len(prompt_text(chat())) // BLOCK_CHARS
    assert shared >= 3 and tides.blocks[:shared] == stars.blocks[:shared]
    assert tides.blocks != stars.blocks
    assert tides.key == stars.key  # the system prompt is longer than prefix_chars


def test_the_ring_key_is_the_prompts_first_prefix_chars():
    long = "Once upon a time " * 50
    assert affinity_of({"prompt": long}, NO_HEADERS).key == "prompt:" + long[:256]
    assert affinity_of({"prompt": long}, NO_HEADERS, prefix_chars=16).key == "prompt:" + long[:16]


def test_chat_content_parts_count_as_content():
    parts = [{"type": "text", "text": "Tell me about tides."}]
    tides = {"messages": [{"role": "user", "content": parts}]}
    stars = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Stars?"}]}]}
    assert prompt_text(tides) != prompt_text(stars)
    assert "Tell me about tides." in prompt_text(tides)


def test_a_batch_routes_on_its_first_prompt_and_token_ids_on_their_numbers():
    assert prompt_text({"prompt": ["first", "second"]}) == "first"
    ids = list(range(100))
    assert prompt_text({"prompt": ids}) == prompt_text({"prompt": [ids]}) == " ".join(map(str, ids))
    assert affinity_of({"prompt": ids}, NO_HEADERS).blocks == block_hashes(
        prompt_text({"prompt": ids})
    )


def test_no_prompt_gives_no_affinity():
    for body in [{}, {"prompt": ""}, {"prompt": []}, {"messages": []}]:
        assert affinity_of(body, NO_HEADERS) == Affinity(None), body
