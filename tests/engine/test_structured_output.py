"""Grammar-constrained decoding in the engine: every completion is JSON matching its schema,
whatever the sampling, next to unconstrained requests that it leaves as they were."""

from __future__ import annotations

import json

import jsonschema
import pytest
from pagoda_worker.engine.config import EngineConfig
from pagoda_worker.engine.llm_engine import LLMEngine
from pagoda_worker.engine.outputs import FinishReason
from pagoda_worker.engine.sampling_params import SamplingParams, StructuredOutput

from tests.schemas import PERSON

PROMPT = [1, 403, 407, 261, 378, 432, 317]  # "Once upon a time, Lily" in stories260K


@pytest.fixture(scope="module")
def engine(stories_dir) -> LLMEngine:
    return LLMEngine(EngineConfig(model=str(stories_dir), max_num_seqs=16))


def run(engine: LLMEngine, requests: list[tuple[list[int], SamplingParams]]) -> list:
    ids = [engine.add_request(prompt, params) for prompt, params in requests]
    done = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                done[out.request_id] = out
    return [done[i] for i in ids]


def schema_params(schema: dict | None, **sampling) -> SamplingParams:
    structured = StructuredOutput(json.dumps(schema) if schema is not None else None)
    return SamplingParams(**{"max_tokens": 200, **sampling}, structured_output=structured)


@pytest.mark.parametrize(
    "sampling",
    [dict(temperature=0.0), *(dict(temperature=1.0, seed=s) for s in range(4)), dict(n=3)],
)
def test_every_completion_is_json_that_matches_its_schema(engine, sampling):
    (out,) = run(engine, [(PROMPT, schema_params(PERSON, **sampling))])
    for completion in out.outputs:
        assert completion.finish_reason is FinishReason.STOP, completion.text
        jsonschema.validate(json.loads(completion.text), PERSON)


def test_json_object_without_a_schema(engine):
    """stories260K writes a story into the object's first key and never closes it: the cut
    completion is still a prefix of a JSON object, token by token."""
    (out,) = run(engine, [(PROMPT, schema_params(None, temperature=1.0, seed=5))])
    completion = out.outputs[0]
    assert completion.finish_reason is FinishReason.LENGTH and completion.text.startswith("{")
    matcher = engine.core.grammars.matcher(StructuredOutput(None))
    assert all(matcher.consume_token(t) for t in completion.token_ids)
    free = run(engine, [(PROMPT, SamplingParams(max_tokens=200, temperature=1.0, seed=5))])
    matcher = engine.core.grammars.matcher(StructuredOutput(None))
    assert not all(matcher.consume_token(t) for t in free[0].outputs[0].token_ids)


def test_constrained_and_free_requests_share_a_batch_without_changing_the_free_ones(engine):
    free = SamplingParams(max_tokens=24, temperature=0.0)
    alone = run(engine, [(PROMPT, free), (PROMPT[:3], free)])
    mixed = run(
        engine,
        [
            (PROMPT, free),
            (PROMPT, schema_params(PERSON, temperature=0.0)),
            (PROMPT[:3], free),
            (
                PROMPT[:2],
                schema_params(
                    {"type": "array", "items": {"type": "integer", "maximum": 99}, "maxItems": 4}
                ),
            ),
        ],
    )
    assert [o.outputs[0].token_ids for o in (mixed[0], mixed[2])] == [
        o.outputs[0].token_ids for o in alone
    ]
    jsonschema.validate(json.loads(mixed[1].outputs[0].text), PERSON)
    assert all(isinstance(x, int) for x in json.loads(mixed[3].outputs[0].text))


def test_async_scheduling_gives_the_same_constrained_tokens(stories_dir, engine):
    sync = LLMEngine(EngineConfig(model=str(stories_dir), async_scheduling=False))
    params = schema_params(PERSON, temperature=1.0, seed=3)
    assert run(sync, [(PROMPT, params)])[0].outputs[0].token_ids == (
        run(engine, [(PROMPT, params)])[0].outputs[0].token_ids
    )


def test_a_cut_completion_ends_with_length(engine):
    (out,) = run(engine, [(PROMPT, schema_params(PERSON, max_tokens=5))])
    assert out.outputs[0].finish_reason is FinishReason.LENGTH
    assert out.outputs[0].text.startswith("{")


def test_a_schema_that_does_not_compile_is_refused_and_nothing_is_kept(engine):
    bad = StructuredOutput(json.dumps({"type": "objekt"}))
    with pytest.raises(ValueError, match=r"^structured_output: .*objekt"):
        engine.add_request(PROMPT, SamplingParams(structured_output=bad))
    assert not engine.has_unfinished_requests()
