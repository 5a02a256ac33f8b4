"""Chat responses that carry tool calls, whole and streamed, in OpenAI's shapes."""

from __future__ import annotations

import re

from pagoda_worker.engine.outputs import CompletionOutput, FinishReason
from pagoda_worker.server.responses import ChatFormat
from pagoda_worker.server.tool_parsers import HermesParser

CALL = '<tool_call>\n{"name": "get_time", "arguments": {"zone": "CET"}}\n</tool_call>'
CALL_ID = re.compile(r"^call_[A-Za-z0-9]{24}$")


def output(text: str, new_text: str = "", reason: FinishReason | None = None):
    return CompletionOutput(0, [], text, [0], new_text, None, None, reason)


def streamed(pieces: list[str], reason: FinishReason) -> list[dict]:
    """The choices a stream sends for these pieces of text; the last piece finishes."""
    chat = ChatFormat(str, HermesParser)
    text, choices = "", []
    for i, piece in enumerate(pieces):
        text += piece
        last = i == len(pieces) - 1
        choices.append(chat.delta_choice(0, output(text, piece, reason if last else None), None))
    return choices


def without_ids(calls: list[dict]) -> list[dict]:
    assert all(CALL_ID.match(call.pop("id")) for call in calls)
    return calls


TIME_CALL = {"type": "function", "function": {"name": "get_time", "arguments": '{"zone": "CET"}'}}


def test_a_whole_message_with_calls():
    text = f"Let me look.\n{CALL}\n{CALL}"
    choice = ChatFormat(str, HermesParser).final_choice(
        0, output(text, "", FinishReason.STOP), None
    )
    message = choice["message"]
    assert without_ids(message.pop("tool_calls")) == [TIME_CALL, TIME_CALL]
    assert message == {"role": "assistant", "content": "Let me look."}
    assert choice["finish_reason"] == "tool_calls"


def test_a_message_of_calls_alone_has_null_content():
    choice = ChatFormat(str, HermesParser).final_choice(
        0, output(CALL, "", FinishReason.STOP), None
    )
    assert choice["message"]["content"] is None
    assert len(choice["message"]["tool_calls"]) == 1


def test_a_text_answer_is_left_as_it_is():
    text = "Once upon a time <b>\n"
    choice = ChatFormat(str, HermesParser).final_choice(
        0, output(text, "", FinishReason.STOP), None
    )
    assert choice["message"] == {"role": "assistant", "content": text}
    assert choice["finish_reason"] == "stop"


def test_a_stream_sends_text_then_each_call_whole():
    half = len(CALL) // 2
    choices = streamed(
        ["Let", " me look.\n", CALL[:half], CALL[half:], f"\n{CALL}", "\n"], FinishReason.STOP
    )
    deltas = [c["delta"] for c in choices]
    assert deltas[:3] == [{"content": "Let"}, {"content": " me look."}, {"content": ""}]
    first, second = deltas[3]["tool_calls"], deltas[4]["tool_calls"]
    assert without_ids(first) == [{"index": 0} | TIME_CALL]
    assert without_ids(second) == [{"index": 1} | TIME_CALL]
    assert deltas[5] == {}
    assert [c["finish_reason"] for c in choices] == [None] * 5 + ["tool_calls"]


def test_a_stream_cut_inside_a_call_sends_its_text_at_the_end():
    choices = streamed(["Sure. ", CALL[:20]], FinishReason.LENGTH)
    assert [c["delta"] for c in choices] == [{"content": "Sure."}, {"content": " " + CALL[:20]}]
    assert choices[-1]["finish_reason"] == "length"
