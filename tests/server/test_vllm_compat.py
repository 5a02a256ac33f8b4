"""Where vLLM's OpenAI server is lenient for good reason, so is ours: `best_of`, `echo` and
`logit_bias`, driven by the official `openai` client."""

from __future__ import annotations

import openai
import pytest
from pagoda_worker.engine.llm import LLM
from pagoda_worker.engine.sampling_params import SamplingParams
from pagoda_worker.server.token_text import TokenText

pytestmark = pytest.mark.timeout(120)

PROMPT = "Once upon a time"
MODEL = "stories260K"


@pytest.fixture(scope="module")
def offline(stories_dir) -> LLM:
    return LLM(str(stories_dir))


def greedy_ids(offline: LLM, prompt, max_tokens: int, **params) -> list[int]:
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, **params)
    return offline.generate(prompt, params)[0].outputs[0].token_ids


def refused(call) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as caught:
        call()
    return caught.value


# ----- logit_bias -----


def test_a_bias_of_100_forces_a_token_and_minus_100_bans_one(server, offline):
    client = server.client()
    common = {"model": MODEL, "prompt": PROMPT, "max_tokens": 6, "temperature": 0}
    forced = client.completions.create(**common, logprobs=0, logit_bias={"350": 100})
    assert forced.choices[0].logprobs.tokens == [TokenText(offline.tokenizer)(350)] * 6

    usual = greedy_ids(offline, PROMPT, 12)
    banned = client.completions.create(
        **(common | {"max_tokens": 12, "temperature": 1.0, "seed": 3}),
        logprobs=0,
        logit_bias={str(usual[0]): -100, str(usual[1]): -100},
        extra_body={"ignore_eos": True},
    )
    text = TokenText(offline.tokenizer)
    shown = banned.choices[0].logprobs.tokens
    assert text(usual[0]) not in shown and text(usual[1]) not in shown


def test_chat_takes_logit_bias_too(server, offline):
    response = server.client().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Tell me a story."}],
        max_tokens=4,
        temperature=0,
        logit_bias={"350": 100},
        logprobs=True,
    )
    tokens = [entry.token for entry in response.choices[0].logprobs.content]
    assert tokens == [TokenText(offline.tokenizer)(350)] * 4


@pytest.mark.parametrize(
    ("bias", "message"),
    [
        ({"350": 100.5}, "logit_bias: biases must be in [-100, 100]"),
        ({"350": -101}, "logit_bias: biases must be in [-100, 100]"),
        ({"99999": 1}, "logit_bias: token ids must be in [0, 512)"),
        ({"-1": 1}, "logit_bias: token ids must be >= 0"),
        ({"cat": 1}, "logit_bias: keys must be token ids, got 'cat'"),
        ({str(i): 1 for i in range(301)}, "logit_bias: at most 300 tokens"),
    ],
)
def test_bad_logit_bias_is_a_400_naming_the_field(server, bias, message):
    error = refused(
        lambda: server.client().completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=2, logit_bias=bias
        )
    )
    assert error.body["param"] == "logit_bias"
    assert message in error.body["message"]


# ----- best_of -----


def test_best_of_returns_the_n_most_likely_of_best_of_completions(server, offline):
    sampled = {"temperature": 1.0, "seed": 11, "max_tokens": 8}
    response = server.client().completions.create(
        model=MODEL, prompt=PROMPT, n=2, best_of=5, extra_body={"ignore_eos": True}, **sampled
    )
    # The same five completions, offline: seeded rows draw the same tokens in any batch.
    params = SamplingParams(n=5, logprobs=0, ignore_eos=True, **sampled)
    candidates = offline.generate(PROMPT, params)[0].outputs
    ranked = sorted(candidates, key=lambda c: -sum(lp.logprob for lp in c.logprobs))
    assert [c.text for c in response.choices] == [c.text for c in ranked[:2]]
    assert [c.index for c in response.choices] == [0, 1]
    assert response.usage.completion_tokens == sum(len(c.token_ids) for c in candidates)
    best = offline.generate(PROMPT, SamplingParams(n=2, best_of=5, ignore_eos=True, **sampled))
    assert [c.text for c in best[0].outputs] == [c.text for c in response.choices]


def test_best_of_cannot_stream_unless_it_equals_n(server):
    client = server.client()
    error = refused(
        lambda: client.completions.create(model=MODEL, prompt=PROMPT, best_of=3, stream=True)
    )
    assert error.body["param"] == "best_of"
    assert "streaming" in error.body["message"]
    chunks = list(
        client.completions.create(
            model=MODEL, prompt=PROMPT, n=2, best_of=2, max_tokens=3, stream=True
        )
    )
    assert {c.choices[0].index for c in chunks} == {0, 1}


def test_best_of_below_n_is_a_400(server):
    error = refused(
        lambda: server.client().completions.create(model=MODEL, prompt=PROMPT, n=3, best_of=2)
    )
    assert error.body["param"] == "best_of" and "must be >= n" in error.body["message"]


async def test_admission_counts_best_of_sequences(make_server):
    server = make_server(engine={"max_seqs_per_request": 100})
    error = refused(
        lambda: server.client().completions.create(
            model=MODEL, prompt=[PROMPT, PROMPT], best_of=60, max_tokens=2
        )
    )
    assert error.body["param"] == "best_of"
    assert "2 prompt(s) x best_of=60 = 120 sequences" in error.body["message"]


# ----- echo -----


def test_echo_puts_each_prompt_before_its_choices(server, offline):
    client = server.client()
    plain = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=6, temperature=0)
    echoed = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=6, temperature=0, echo=True
    )
    assert echoed.choices[0].text == PROMPT + plain.choices[0].text
    assert echoed.usage == plain.usage

    several = client.completions.create(
        model=MODEL, prompt=[PROMPT, "The cat"], n=2, max_tokens=3, temperature=0, echo=True
    )
    prompts = [c.text[: len(PROMPT)] for c in several.choices[:2]]
    prompts += [c.text[: len("The cat")] for c in several.choices[2:]]
    assert prompts == [PROMPT, PROMPT, "The cat", "The cat"]
    as_ids = client.completions.create(
        model=MODEL, prompt=offline.encode("The cat"), max_tokens=3, temperature=0, echo=True
    )
    assert as_ids.choices[0].text == "The cat" + several.choices[2].text[len("The cat") :]


def test_echo_with_logprobs_scores_the_prompt_tokens_first(server, offline):
    response = server.client().completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=4, temperature=0, echo=True, logprobs=2
    )
    logprobs = response.choices[0].logprobs
    params = SamplingParams(temperature=0.0, max_tokens=4, logprobs=2, prompt_logprobs=2)
    expected = offline.generate(PROMPT, params)[0]
    prompt_ids, completion = expected.prompt_token_ids, expected.outputs[0]
    text = TokenText(offline.tokenizer)
    assert logprobs.tokens == [text(t) for t in prompt_ids + completion.token_ids]
    scored = expected.prompt_logprobs[1:] + completion.logprobs
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    assert logprobs.token_logprobs[1:] == pytest.approx([e.logprob for e in scored], abs=1e-4)
    assert [list(top) for top in logprobs.top_logprobs[1:]] == [
        [text(t) for t in e.top] for e in scored
    ]
    assert logprobs.text_offset[0] == 0 and len(logprobs.text_offset) == len(logprobs.tokens)


def test_streamed_echo_sends_the_prompt_in_the_first_chunk(server, offline):
    client = server.client()
    plain = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0)
    chunks = list(
        client.completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0, echo=True, stream=True
        )
    )
    assert chunks[0].choices[0].text.startswith(PROMPT)
    assert "".join(c.choices[0].text for c in chunks) == PROMPT + plain.choices[0].text
    with_logprobs = list(
        client.completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0, echo=True, stream=True,
            logprobs=0,
        )
    )  # fmt: skip
    tokens = [t for c in with_logprobs for t in c.choices[0].logprobs.tokens]
    prompt_tokens = len(with_logprobs[0].choices[0].logprobs.tokens) - 1  # and the first token
    assert tokens[:prompt_tokens] == [
        TokenText(offline.tokenizer)(t) for t in offline.encode(PROMPT)
    ]
