"""Many concurrent streams through the server get exactly what offline generation gives."""

from __future__ import annotations

import asyncio
import random

import pytest
from pagoda_worker.engine.llm import LLM
from pagoda_worker.engine.sampling_params import SamplingParams
from pagoda_worker.server.token_text import TokenText

pytestmark = pytest.mark.timeout(300)

NUM_STREAMS = 64


def requests() -> list[tuple[list[int], SamplingParams]]:
    """Different prompt lengths and output lengths; half greedy, half seeded sampling."""
    rng = random.Random(0)
    out = []
    for i in range(NUM_STREAMS):
        prompt = [1] + [rng.randrange(3, 512) for _ in range(rng.randrange(1, 40))]
        sampling = {"temperature": 0.0} if i % 2 == 0 else {"temperature": 0.9, "seed": i}
        params = SamplingParams(max_tokens=rng.randrange(4, 80), logprobs=0, **sampling)
        out.append((prompt, params))
    return out


async def stream_one(client, prompt: list[int], params: SamplingParams):
    stream = await client.completions.create(
        model="stories260K",
        prompt=prompt,
        max_tokens=params.max_tokens,
        temperature=params.temperature,
        seed=params.seed,
        logprobs=0,
        stream=True,
    )
    text, tokens, finish = "", [], None
    async for chunk in stream:
        [choice] = chunk.choices
        text += choice.text
        tokens += choice.logprobs.tokens if choice.logprobs else []
        finish = choice.finish_reason or finish
    return text, tokens, finish


async def test_concurrent_streams_get_exactly_the_offline_tokens(server, stories_dir):
    batch = requests()
    offline = LLM(str(stories_dir))
    expected = offline.generate([p for p, _ in batch], [sp for _, sp in batch])
    client = server.async_client()
    results = await asyncio.gather(*(stream_one(client, p, sp) for p, sp in batch))
    token_text = TokenText(offline.tokenizer)
    for (text, tokens, finish), want in zip(results, expected, strict=True):
        [completion] = want.outputs
        assert text == completion.text
        assert tokens == [token_text(t) for t in completion.token_ids]
        assert finish == str(completion.finish_reason)
