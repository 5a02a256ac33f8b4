"""Async scheduling: step N+1 is launched before step N's tokens are read, and that changes no
output — whatever the sampling, stops, aborts and preemptions."""

from __future__ import annotations

import pytest
from pagoda_worker.engine.config import EngineConfig
from pagoda_worker.engine.llm_engine import LLMEngine
from pagoda_worker.engine.outputs import FinishReason
from pagoda_worker.engine.sampling_params import SamplingParams
from pagoda_worker.engine.sequence import UNREAD
from pagoda_worker.engine.unread_tokens import UnreadStep


def make_engine(stories_dir, async_scheduling: bool, **settings) -> LLMEngine:
    # A fixed KV cache: on a GPU the memory budget would let only one engine per process start.
    config = dict(block_size=4, max_num_batched_tokens=24, max_num_seqs=8, num_kv_blocks=200)
    config |= settings
    return LLMEngine(
        EngineConfig(model=str(stories_dir), async_scheduling=async_scheduling, **config)
    )


# Every way of choosing tokens and of stopping: greedy, seeded samples with top-k/top-p/min-p,
# logprobs, penalties (which must count the unread token), stop strings, EOS, n > 1.
WORK = [
    ("Once upon a time", SamplingParams(temperature=0.0, max_tokens=40)),
    ("Lily", SamplingParams(temperature=0.8, top_k=40, seed=3, max_tokens=30, logprobs=3)),
    ("Tom and", SamplingParams(temperature=1.0, top_p=0.9, min_p=0.05, seed=5, max_tokens=25)),
    ("The dog", SamplingParams(temperature=0.0, max_tokens=30, stop=["."])),
    ("One day", SamplingParams(temperature=0.7, seed=9, max_tokens=20, repetition_penalty=1.3)),
    ("She", SamplingParams(temperature=0.0, max_tokens=20, frequency_penalty=0.5)),
    ("Once", SamplingParams(n=3, temperature=1.0, seed=11, max_tokens=15)),
    ("The sun", SamplingParams(temperature=0.0, max_tokens=1)),
]


def run(engine: LLMEngine, abort_after: dict[int, int] | None = None) -> list:
    """Add one request per step, abort some after a number of steps, collect final outputs."""
    abort_after = abort_after or {}
    tokenizer = engine.tokenizer
    pending, ids, done, steps = list(WORK), [], {}, 0
    while pending or engine.has_unfinished_requests():
        if pending:
            prompt, params = pending.pop(0)
            ids.append(engine.add_request(tokenizer.encode(prompt), params))
        for index, after in abort_after.items():
            if steps == after and index < len(ids):
                engine.abort_request(ids[index])
        for out in engine.step():
            if out.finished:
                done[out.request_id] = out
        steps += 1
    stats = engine.stats()
    assert stats.num_free_blocks == stats.num_gpu_blocks, "blocks leaked"
    return [
        [(c.token_ids, c.text, c.finish_reason, c.logprobs) for c in done[rid].outputs]
        for rid in ids
    ]


@pytest.mark.parametrize("settings", [{}, {"num_kv_blocks": 20}], ids=["roomy", "preempting"])
def test_async_scheduling_changes_no_output(stories_dir, settings):
    sync = make_engine(stories_dir, async_scheduling=False, **settings)
    overlapped = make_engine(stories_dir, async_scheduling=True, **settings)
    expected = run(sync)
    got = run(overlapped)
    # Logprobs may differ by rounding where preemption recomputed a sequence at another step.
    assert [[c[:3] for c in outs] for outs in got] == [[c[:3] for c in outs] for outs in expected]
    for outs, want_outs in zip(got, expected, strict=True):
        for c, want in zip(outs, want_outs, strict=True):
            got_lps = [lp.logprob for lp in c[3] or []]
            assert got_lps == pytest.approx([lp.logprob for lp in want[3] or []], abs=1e-5)
    if settings:
        assert overlapped.stats().num_preemptions > 0, "meant to preempt with unread tokens"
    finishes = {c[2] for outputs in expected for c in outputs}
    assert {FinishReason.STOP, FinishReason.LENGTH} <= finishes


def test_aborts_with_unread_tokens(stories_dir):
    aborts = {0: 3, 1: 4, 6: 8}
    sync = run(make_engine(stories_dir, async_scheduling=False), aborts)
    overlapped = run(make_engine(stories_dir, async_scheduling=True), aborts)
    for got, want in zip(overlapped, sync, strict=True):
        for (tokens, _, reason, _), (want_tokens, _, want_reason, _) in zip(got, want, strict=True):
            assert UNREAD not in tokens
            assert reason is want_reason
            if reason is FinishReason.ABORT:  # may have read one step fewer than sync
                assert tokens == want_tokens[: len(tokens)]
            else:
                assert tokens == want_tokens


def test_next_step_is_launched_before_the_previous_is_read(stories_dir, monkeypatch):
    engine = make_engine(stories_dir, async_scheduling=True)
    events = []
    execute, wait = engine.core.runner.execute, UnreadStep.wait
    monkeypatch.setattr(
        engine.core.runner, "execute", lambda *a: events.append("launch") or execute(*a)
    )
    monkeypatch.setattr(UnreadStep, "wait", lambda self: events.append("read") or wait(self))
    params = SamplingParams(temperature=0.0, max_tokens=5, ignore_eos=True)
    engine.add_request(engine.tokenizer.encode("Once upon a time"), params)
    outputs = []
    while engine.has_unfinished_requests():
        outputs += engine.step()
    # A prefill and 4 decodes; each launch but the first comes before the step ahead is read, and
    # no step is launched past max_tokens.
    assert events == ["launch", *["launch", "read"] * 4, "read"]
    assert len(outputs[-1].outputs[0].token_ids) == 5 and outputs[-1].finished


def test_penalties_count_the_unread_token(stories_dir):
    """With async scheduling the newest token is unread (still on the device) when the next
    one is sampled; a penalty that missed it would draw differently from the engine that reads
    every step first (this seeded request does, checked by leaving the unread token out)."""
    params = SamplingParams(temperature=1.2, seed=3, max_tokens=40, repetition_penalty=3.0)
    plain = SamplingParams(temperature=1.2, seed=3, max_tokens=40)
    outputs = {}
    for overlap in (False, True):
        engine = make_engine(stories_dir, async_scheduling=overlap)
        rids = [
            engine.add_request(engine.tokenizer.encode("Once upon a time"), p)
            for p in (params, plain)
        ]
        done = {}
        while engine.has_unfinished_requests():
            done |= {out.request_id: out for out in engine.step() if out.finished}
        outputs[overlap] = [done[rid].outputs[0].token_ids for rid in rids]
    assert outputs[True] == outputs[False]
    assert outputs[True][0] != outputs[True][1], "the penalties were meant to change the output"
