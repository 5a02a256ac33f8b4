"""--stream-coalesce: a stream that fell behind catches up in one chunk, with the same text."""

from __future__ import annotations

import json
import time

import aiohttp
import pytest
from pagoda_worker.engine.outputs import (
    CompletionOutput,
    FinishReason,
    RequestMetrics,
    RequestOutput,
)
from pagoda_worker.engine.request_group import RequestGroup

pytestmark = pytest.mark.timeout(120)


def output(rid: str, tokens: list[int], new: list[int], finished: bool = False) -> RequestOutput:
    text = "".join(f"<{t}>" for t in tokens)
    new_text = "".join(f"<{t}>" for t in new)
    reason = FinishReason.LENGTH if finished else None
    completion = CompletionOutput(0, tokens, text, new, new_text, None, None, reason)
    return RequestOutput(rid, [1], [completion], finished, 0, RequestMetrics(0.0))


async def test_queued_outputs_of_a_request_merge_and_others_stay_apart():
    group = RequestGroup(["a", "b"], abort=lambda group: None)
    for item in [
        output("a", [1], [1]),
        output("b", [7], [7]),
        output("a", [1, 2], [2]),
        output("a", [1, 2, 3], [3], finished=True),
        output("b", [7, 8], [8], finished=True),
    ]:
        group.put(item)
    batches = [batch async for batch in group.batches(coalesce=True)]
    assert len(batches) == 1
    (ia, a), (ib, b) = batches[0]
    assert (ia, ib) == (0, 1)
    assert a.outputs[0].new_token_ids == [1, 2, 3] and a.outputs[0].new_text == "<1><2><3>"
    assert a.finished and a.outputs[0].token_ids == [1, 2, 3]
    assert b.outputs[0].new_token_ids == [7, 8] and b.finished


async def test_without_coalescing_every_output_is_its_own_batch():
    group = RequestGroup(["a"], abort=lambda group: None)
    group.put(output("a", [1], [1]))
    group.put(output("a", [1, 2], [2], finished=True))
    batches = [batch async for batch in group.batches(coalesce=False)]
    assert [[o.outputs[0].new_token_ids for _, o in b] for b in batches] == [[[1]], [[2]]]


async def test_an_error_after_queued_outputs_comes_after_them():
    group = RequestGroup(["a"], abort=lambda group: None)
    group.put(output("a", [1], [1]))
    group.fail(RuntimeError("engine gone"))
    seen = []
    with pytest.raises(RuntimeError, match="engine gone"):
        async for batch in group.batches(coalesce=True):
            seen.append(batch)
    assert len(seen) == 1


async def test_a_stream_that_fell_behind_catches_up_in_fewer_chunks_with_the_same_text(
    make_server,
):
    server = make_server(stream_coalesce=True)
    body = {"prompt": "Once upon a time", "max_tokens": 200, "ignore_eos": True,
            "temperature": 0}  # fmt: skip
    whole = (await server.fetch("POST", "/v1/completions", json=body)).json()
    chunks = []
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.url + "/v1/completions", json=body | {"stream": True}) as reply,
    ):
        async for line in reply.content:
            if line.startswith(b"data: {"):
                chunks.append(json.loads(line[6:]))
                if len(chunks) == 1:  # mid-stream: the front end's loop stalls, reports pile up
                    server._loop.call_soon_threadsafe(time.sleep, 0.5)
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole["choices"][0]["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert len(chunks) < 200  # some chunks carried several steps' tokens
