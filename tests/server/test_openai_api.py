"""The OpenAI API, driven by the official `openai` client against a live server."""

from __future__ import annotations

import openai
import pytest
from pagoda_worker.engine.llm import LLM
from pagoda_worker.engine.sampling_params import SamplingParams
from pagoda_worker.server.token_text import TokenText

pytestmark = pytest.mark.timeout(120)

PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def offline(stories_dir) -> LLM:
    return LLM(str(stories_dir))


def greedy(offline: LLM, prompt, max_tokens: int, **params):
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, **params)
    return offline.generate(prompt, params)[0].outputs[0]


def test_completion_matches_offline_generation(server, offline):
    expected = greedy(offline, PROMPT, 24)
    response = server.client().completions.create(
        model="stories260K", prompt=PROMPT, max_tokens=24, temperature=0
    )
    [choice] = response.choices
    assert choice.text == expected.text
    assert choice.finish_reason == str(expected.finish_reason)
    assert response.object == "text_completion"
    assert response.model == "stories260K"
    assert response.id.startswith("cmpl-") and response.created > 0
    prompt_tokens = len(offline.encode(PROMPT))
    assert response.usage.prompt_tokens == prompt_tokens
    assert response.usage.completion_tokens == len(expected.token_ids)
    assert response.usage.total_tokens == prompt_tokens + len(expected.token_ids)


def test_streamed_completion_adds_up_to_the_whole(server, offline):
    expected = greedy(offline, PROMPT, 40, ignore_eos=True)
    chunks = list(
        server.client().completions.create(
            model="stories260K",
            prompt=PROMPT,
            max_tokens=40,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
    )
    text_chunks, usage_chunk = chunks[:-1], chunks[-1]
    assert "".join(c.choices[0].text for c in text_chunks) == expected.text
    assert [c.choices[0].finish_reason for c in text_chunks][-1] == "length"
    assert all(c.choices[0].finish_reason is None for c in text_chunks[:-1])
    assert all(c.usage is None for c in text_chunks)
    assert usage_chunk.choices == [] and usage_chunk.usage.completion_tokens == 40
    assert len({c.id for c in chunks}) == 1


async def test_stream_ends_with_done(server):
    body = {"prompt": PROMPT, "max_tokens": 3, "stream": True}
    reply = await server.fetch("POST", "/v1/completions", json=body)
    assert reply.headers["Content-Type"].startswith("text/event-stream")
    events = [line for line in reply.body.decode().split("\n") if line]
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events)


def test_chat_completion_uses_the_plain_template(server, offline):
    messages = [
        {"role": "system", "content": "You tell stories."},
        {"role": "user", "content": "Tell me about a cat."},
    ]
    rendered = "<s>System: You tell stories.\nUser: Tell me about a cat.\nAssistant:"
    prompt = offline.tokenizer.encode(rendered, add_special_tokens=False)
    expected = greedy(offline, prompt, 30)
    response = server.client().chat.completions.create(
        model="stories260K", messages=messages, max_completion_tokens=30, temperature=0
    )
    [choice] = response.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == expected.text
    assert choice.finish_reason == str(expected.finish_reason)
    assert response.object == "chat.completion"
    assert response.usage.prompt_tokens == len(prompt)


def test_streamed_chat_names_the_assistant_then_streams_the_text(server, offline):
    messages = [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]
    stream = server.client().chat.completions.create(
        model="stories260K", messages=messages, max_tokens=20, temperature=0, stream=True
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].object == "chat.completion.chunk"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    whole = server.client().chat.completions.create(
        model="stories260K", messages=messages, max_tokens=20, temperature=0
    )
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


@pytest.mark.parametrize(
    "prompt",
    [
        ["Once upon a time", "The cat sat"],
        [1, 403, 407, 261, 378],
        [[1, 403, 407], [1, 450, 300, 290]],
    ],
    ids=["strings", "token-ids", "token-id-lists"],
)
def test_every_prompt_form_is_served(server, offline, prompt):
    prompts = prompt if isinstance(prompt[0], str | list) else [prompt]
    response = server.client().completions.create(
        model="stories260K", prompt=prompt, max_tokens=8, temperature=0
    )
    assert [c.index for c in response.choices] == list(range(len(prompts)))
    for choice, one in zip(response.choices, prompts, strict=True):
        assert choice.text == greedy(offline, one, 8).text


def test_n_completions_of_several_prompts_are_indexed_prompt_major(server):
    response = server.client().completions.create(
        model="stories260K",
        prompt=["Once", "The dog"],
        n=3,
        max_tokens=8,
        temperature=1.5,
        seed=7,
        logprobs=0,
    )
    assert [c.index for c in response.choices] == list(range(6))
    assert len({c.text for c in response.choices[3:]}) > 1  # sampled, so the n differ
    tokens = sum(len(c.logprobs.tokens) for c in response.choices)
    assert response.usage.completion_tokens == tokens
    assert response.usage.prompt_tokens == 2 + 4  # each prompt once, not once per choice


def test_seeded_sampling_repeats(server):
    def ask():
        return server.client().completions.create(
            model="stories260K", prompt=PROMPT, max_tokens=20, temperature=1.0, seed=1234
        )

    assert ask().choices[0].text == ask().choices[0].text


def test_completion_logprobs_have_the_legacy_shape(server, offline):
    expected = greedy(offline, PROMPT, 6, ignore_eos=True, logprobs=2)
    response = server.client().completions.create(
        model="stories260K",
        prompt=PROMPT,
        max_tokens=6,
        temperature=0,
        logprobs=2,
        extra_body={"ignore_eos": True},
    )
    choice = response.choices[0]
    logprobs = choice.logprobs
    tokens = [TokenText(offline.tokenizer)(t) for t in expected.token_ids]
    assert logprobs.tokens == tokens
    assert "".join(tokens) == choice.text  # leading spaces kept: the tokens add up to the text
    assert logprobs.token_logprobs == pytest.approx([e.logprob for e in expected.logprobs])
    assert all(len(top) == 2 for top in logprobs.top_logprobs)
    offsets = [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
    assert logprobs.text_offset == offsets


def test_chat_logprobs_have_the_chat_shape(server):
    response = server.client().chat.completions.create(
        model="stories260K",
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=4,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
        extra_body={"ignore_eos": True},
    )
    content = response.choices[0].logprobs.content
    assert len(content) == 4
    for entry in content:
        assert entry.logprob <= 0
        assert entry.bytes == list(entry.token.encode())
        assert len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[-1].logprob
    assert "".join(e.token for e in content) == response.choices[0].message.content


def test_stop_string_ends_with_finish_reason_stop(server, offline):
    text = greedy(offline, PROMPT, 30).text
    stop = text.split()[3]
    response = server.client().completions.create(
        model="stories260K", prompt=PROMPT, max_tokens=30, temperature=0, stop=[stop]
    )
    choice = response.choices[0]
    assert choice.finish_reason == "stop"
    assert stop not in choice.text and text.startswith(choice.text)


def test_models_lists_the_served_model(server):
    models = server.client().models.list()
    [card] = models.data
    assert card.id == "stories260K" and card.owned_by == "pagoda"
    assert card.model_extra["max_model_len"] == 512


async def test_version(server):
    reply = await server.fetch("GET", "/version")
    assert reply.json()["version"] == "0.1.0"


def test_served_model_name_is_what_clients_ask_for(make_server):
    named = make_server(served_model_name="storyteller")
    client = named.client()
    assert [m.id for m in client.models.list().data] == ["storyteller"]
    response = client.completions.create(model="storyteller", prompt=PROMPT, max_tokens=2)
    assert response.model == "storyteller"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="stories260K", prompt=PROMPT, max_tokens=2)


async def test_request_id_is_echoed(server):
    reply = await server.fetch("GET", "/v1/models", headers={"X-Request-Id": "abc-123"})
    assert reply.headers["X-Request-Id"] == "abc-123"
    generated = (await server.fetch("GET", "/v1/models")).headers["X-Request-Id"]
    assert len(generated) == 32


def test_continuous_usage_stats_count_up_in_every_chunk(server):
    """vLLM's extension, which benchmark clients such as guidellm send."""
    stream = server.client().chat.completions.create(
        model="stories260K",
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True, "continuous_usage_stats": True},
        extra_body={"ignore_eos": True},
    )
    counts = [chunk.usage.completion_tokens for chunk in stream]
    assert counts == sorted(counts) and counts[0] == 0 and counts[-1] == 6
