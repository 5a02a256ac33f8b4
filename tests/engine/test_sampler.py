import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pagoda_worker.engine.sampler import (
    Sampler,
    SamplingRow,
    apply_logit_bias,
    apply_penalties,
    filtered_probs,
    make_generator,
)
from pagoda_worker.engine.sampling_params import SamplingParams
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

VOCAB = 32


def row(generator=None, prompt=(), output=(), **params) -> SamplingRow:
    return SamplingRow(SamplingParams(**params), list(prompt), list(output), generator)


def log_probs_of(probs: list[float]) -> torch.Tensor:
    return torch.tensor(probs).log().unsqueeze(0)


def draw_counts(logits: torch.Tensor, params: SamplingParams, draws: int, seed: int) -> list[int]:
    rows = [SamplingRow(params, [], [], None) for _ in range(draws)]
    sampler = Sampler(torch.Generator().manual_seed(seed))
    tokens = sampler(logits.expand(draws, -1), rows).token_ids
    return torch.bincount(tokens, minlength=logits.shape[1]).tolist()


def chi_square(counts: list[int], expected_probs: list[float]) -> float:
    total = sum(counts)
    pairs = zip(counts, expected_probs, strict=True)
    return sum((c - total * p) ** 2 / (total * p) for c, p in pairs if p)


# Critical value of chi-square with 3 degrees of freedom at p = 0.001.
CHI2_3DOF_999 = 16.27


def test_greedy_is_argmax_of_the_logits():
    logits = torch.randn(5, VOCAB, generator=torch.Generator().manual_seed(0))
    out = Sampler()(logits, [row(temperature=0.0) for _ in range(5)])
    assert torch.equal(out.token_ids, logits.argmax(dim=-1))
    assert out.token_ids.dtype == torch.int64
    assert out.logprobs is None and out.top_ids is None and out.top_logprobs is None


def test_greedy_breaks_ties_towards_the_lowest_id():
    logits = torch.tensor([[0.0, 2.0, 1.0, 2.0], [3.0, 3.0, 3.0, 3.0]])
    out = Sampler()(logits, [row(temperature=0.0), row(temperature=0.0)])
    assert out.token_ids.tolist() == [1, 0]


def test_greedy_rows_ignore_the_random_rows_and_filters_beside_them():
    logits = torch.randn(6, VOCAB, generator=torch.Generator().manual_seed(1), dtype=torch.bfloat16)
    rows = [
        row(temperature=0.0, top_k=3),
        row(temperature=0.9, top_p=0.5),
        row(temperature=0.0, min_p=0.5),
        row(temperature=1.3, top_k=5, generator=make_generator(1, 0, "cpu")),
        row(temperature=0.0),
        row(temperature=0.7),
    ]
    out = Sampler()(logits, rows)
    greedy = [0, 2, 4]
    assert torch.equal(out.token_ids[greedy], logits.float().argmax(dim=-1)[greedy])


def test_greedy_takes_the_argmax_after_penalties():
    logits = torch.tensor([[5.0, 4.0, 1.0]])
    out = Sampler()(logits, [row(temperature=0.0, output=[0], frequency_penalty=2.0)])
    assert out.token_ids.tolist() == [1]


def test_penalties_match_a_hand_computation():
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5]])
    rows = [
        row(
            prompt=[0],
            output=[1, 1, 2],
            repetition_penalty=2.0,
            frequency_penalty=0.5,
            presence_penalty=0.25,
        )
    ]
    # repetition on {0, 1, 2}: [1, -4, 0.5, 0.5]; then output counts {1: 2, 2: 1}
    expected = [1.0, -4.0 - 2 * 0.5 - 0.25, 0.5 - 0.5 - 0.25, 0.5]
    assert apply_penalties(logits, rows)[0].tolist() == pytest.approx(expected)


def test_penalties_count_an_unread_token():
    """Async scheduling: a row's last output token may be unread, in the previous step's ids."""
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5], [2.0, -2.0, 1.0, 0.5]])
    settings = dict(repetition_penalty=2.0, frequency_penalty=0.5, presence_penalty=0.25)
    known = [row(prompt=[0], output=[1, 1, 2], **settings)] * 2
    unread = [
        SamplingRow(r.params, r.prompt_token_ids, r.output_token_ids[:-1], None, unread_row=i)
        for i, r in zip((1, 0), known, strict=True)
    ]
    previous_ids = torch.tensor([2, 2, 3])  # rows 1 and 0 of the previous step hold token 2
    expected = apply_penalties(logits, known)
    assert torch.equal(apply_penalties(logits, unread, previous_ids), expected)


def test_presence_and_frequency_penalties_ignore_prompt_tokens():
    logits = torch.tensor([[1.0, 1.0]])
    rows = [row(prompt=[0, 0], output=[], frequency_penalty=1.0, presence_penalty=1.0)]
    assert apply_penalties(logits, rows).tolist() == [[1.0, 1.0]]


def test_negative_penalties_encourage_repeats():
    logits = torch.tensor([[1.0, 1.0]])
    rows = [row(output=[1], frequency_penalty=-1.0, presence_penalty=-0.5)]
    assert apply_penalties(logits, rows).tolist() == [[1.0, 2.5]]


def test_repetition_penalty_matches_transformers():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(3, VOCAB, generator=gen)
    histories = [[1, 5, 5, 9], [0, 31, 2], [7, 7, 7, 8]]
    penalty = 1.7
    rows = [row(prompt=h[:2], output=h[2:], repetition_penalty=penalty) for h in histories]
    reference = RepetitionPenaltyLogitsProcessor(penalty)
    for i, history in enumerate(histories):
        expected = reference(torch.tensor([history]), logits[i : i + 1].clone())
        assert torch.equal(apply_penalties(logits, rows)[i], expected[0])


def test_rows_without_penalties_are_untouched_beside_penalised_rows():
    logits = torch.randn(2, VOCAB, generator=torch.Generator().manual_seed(3))
    rows = [row(output=[1, 2], repetition_penalty=1.5, presence_penalty=1.0), row(output=[1, 2])]
    assert torch.equal(apply_penalties(logits, rows)[1], logits[1])


def test_temperature_scales_the_distribution():
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    probs = filtered_probs(logits, [SamplingParams(temperature=0.5)])
    assert torch.allclose(probs, torch.softmax(logits / 0.5, dim=-1))


def test_top_k_keeps_the_k_best_tokens():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    probs = filtered_probs(logits, [SamplingParams(top_k=2)])
    e = math.exp(1.0)
    assert probs[0].tolist() == pytest.approx([0.0, e / (e + 1), 1 / (e + 1), 0.0])


def test_top_k_keeps_tokens_tied_with_the_kth():
    logits = torch.tensor([[3.0, 1.0, 1.0, 0.0]])
    probs = filtered_probs(logits, [SamplingParams(top_k=2)])
    assert (probs[0] > 0).tolist() == [True, True, True, False]


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = log_probs_of([0.5, 0.3, 0.15, 0.05])
    probs = filtered_probs(logits, [SamplingParams(top_p=0.6)])
    assert probs[0].tolist() == pytest.approx([0.625, 0.375, 0.0, 0.0])
    probs = filtered_probs(logits, [SamplingParams(top_p=0.4)])
    assert probs[0].tolist() == pytest.approx([1.0, 0.0, 0.0, 0.0])


def test_top_p_applies_to_the_top_k_survivors():
    logits = log_probs_of([0.4, 0.3, 0.2, 0.1])
    # after top_k=2: [4/7, 3/7]; top_p=0.5 keeps only the first
    probs = filtered_probs(logits, [SamplingParams(top_k=2, top_p=0.5)])
    assert probs[0].tolist() == pytest.approx([1.0, 0.0, 0.0, 0.0])


def test_min_p_drops_tokens_below_a_fraction_of_the_best():
    logits = log_probs_of([0.5, 0.3, 0.15, 0.05])
    probs = filtered_probs(logits, [SamplingParams(min_p=0.2)])
    assert probs[0].tolist() == pytest.approx([0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0], abs=1e-6)


def test_filters_match_transformers_warpers():
    gen = torch.Generator().manual_seed(4)
    for _ in range(20):
        logits = torch.randn(1, VOCAB, generator=gen) * 3
        temperature = float(torch.empty(1).uniform_(0.3, 2.0, generator=gen))
        top_k = int(torch.randint(0, VOCAB + 4, (1,), generator=gen))
        top_p = float(torch.empty(1).uniform_(0.05, 1.0, generator=gen))
        min_p = float(torch.empty(1).uniform_(0.0, 0.3, generator=gen))
        params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
        expected = TemperatureLogitsWarper(temperature)(None, logits.clone())
        if top_k:
            expected = TopKLogitsWarper(top_k)(None, expected)
        expected = TopPLogitsWarper(top_p)(None, expected)
        expected = MinPLogitsWarper(min_p)(None, expected)
        probs = filtered_probs(logits, [params])
        assert torch.equal(probs > 0, expected > float("-inf")), params
        assert torch.allclose(probs, torch.softmax(expected, dim=-1), atol=1e-6)


def test_filters_are_per_row():
    logits = log_probs_of([0.5, 0.3, 0.15, 0.05]).expand(4, -1)
    params = [
        SamplingParams(top_k=1),
        SamplingParams(top_p=0.6),
        SamplingParams(min_p=0.2),
        SamplingParams(),
    ]
    kept = (filtered_probs(logits, params) > 0).sum(dim=-1).tolist()
    assert kept == [1, 2, 3, 4]


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    top_k=st.integers(0, 8),
    top_p=st.floats(0.05, 1.0),
    min_p=st.floats(0.0, 0.9),
    temperature=st.floats(0.05, 3.0),
)
def test_sampling_never_picks_a_filtered_token(seed, top_k, top_p, min_p, temperature):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, VOCAB, generator=gen) * 4
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    allowed = filtered_probs(logits, [params])[0] > 0
    draws = 200
    rows = [SamplingRow(params, [], [], None) for _ in range(draws)]
    tokens = Sampler(gen)(logits.expand(draws, -1), rows).token_ids
    assert allowed[tokens].all()
    if top_k:
        assert int(allowed.sum()) <= top_k


def test_sampling_frequencies_match_the_distribution():
    probs = [0.5, 0.3, 0.15, 0.05]
    counts = draw_counts(log_probs_of(probs), SamplingParams(), draws=4000, seed=5)
    assert chi_square(counts, probs) < CHI2_3DOF_999


def test_sampling_frequencies_follow_temperature_and_filters():
    logits = log_probs_of([0.4, 0.3, 0.2, 0.06, 0.04])
    params = SamplingParams(temperature=0.5, top_k=4)
    # temperature 0.5 squares the probabilities; top_k drops the last token
    squared = [0.16, 0.09, 0.04, 0.0036]
    expected = [p / sum(squared) for p in squared] + [0.0]
    counts = draw_counts(logits, params, draws=4000, seed=6)
    assert counts[4] == 0
    assert chi_square(counts, expected) < CHI2_3DOF_999


def test_seeded_rows_follow_the_distribution():
    probs = [0.5, 0.3, 0.15, 0.05]
    draws = 2000
    rows = [row(generator=make_generator(7, i, "cpu")) for i in range(draws)]
    tokens = Sampler()(log_probs_of(probs).expand(draws, -1), rows).token_ids
    counts = torch.bincount(tokens, minlength=4).tolist()
    assert chi_square(counts, probs) < CHI2_3DOF_999


def run_steps(target_logits: list[torch.Tensor], seed: int, batch: list[tuple[int, int]]):
    """Sample a seeded target row for a few steps inside a batch of filler rows; `batch` gives
    (position of the target, number of filler rows) for each step."""
    fill_gen = torch.Generator().manual_seed(99)
    target_gen = make_generator(seed, 0, "cpu")
    tokens = []
    for logits, (position, fillers) in zip(target_logits, batch, strict=True):
        generators = [make_generator(i, 1, "cpu") if i % 2 else None for i in range(fillers)]
        rows = [row(temperature=0.8, top_p=0.9, generator=g) for g in generators]
        rows.insert(position, row(temperature=1.0, top_k=20, generator=target_gen))
        other = torch.randn(fillers, VOCAB, generator=fill_gen)
        batch_logits = torch.cat([other[:position], logits, other[position:]])
        tokens.append(int(Sampler()(batch_logits, rows).token_ids[position]))
    return tokens


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(-(2**40), 2**40),
    batch=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=4, max_size=4),
)
def test_seeded_rows_pick_the_same_tokens_whatever_the_batch(seed, batch):
    gen = torch.Generator().manual_seed(abs(seed) % 1000)
    steps = [torch.randn(1, VOCAB, generator=gen) for _ in range(4)]
    batch = [(min(position, fillers), fillers) for position, fillers in batch]
    alone = run_steps(steps, seed, [(0, 0)] * 4)
    assert run_steps(steps, seed, batch) == alone


def test_generators_differ_by_seed_and_completion_index():
    def first_draws(seed, index):
        return torch.rand(4, generator=make_generator(seed, index, "cpu")).tolist()

    assert first_draws(3, 0) == first_draws(3, 0)
    assert first_draws(3, 0) != first_draws(3, 1)
    assert first_draws(3, 0) != first_draws(4, 0)


def test_logprobs_are_the_raw_log_softmax():
    gen = torch.Generator().manual_seed(8)
    logits = torch.randn(3, VOCAB, generator=gen) * 5
    rows = [
        row(temperature=0.0, logprobs=2, output=[0, 1], repetition_penalty=3.0),
        row(temperature=0.7, logprobs=0, top_k=3),
        row(temperature=1.0),
    ]
    out = Sampler(gen)(logits, rows)
    reference = torch.log_softmax(logits, dim=-1)
    assert out.logprobs is not None and out.top_ids is not None and out.top_logprobs is not None
    chosen = reference.gather(1, out.token_ids.unsqueeze(1)).squeeze(1)
    assert torch.allclose(out.logprobs, chosen, atol=1e-6)
    assert out.top_ids.shape == (3, 2)
    assert torch.equal(out.top_ids, reference.topk(2).indices)
    assert torch.allclose(out.top_logprobs, reference.topk(2).values, atol=1e-6)


def test_logprobs_of_half_precision_logits_are_computed_in_float32():
    logits = torch.randn(2, VOCAB, generator=torch.Generator().manual_seed(9)).half()
    out = Sampler()(logits, [row(temperature=0.0, logprobs=1)] * 2)
    assert out.logprobs is not None and out.logprobs.dtype == torch.float32
    assert torch.allclose(out.logprobs, torch.log_softmax(logits.float(), -1).amax(-1), atol=1e-6)


def test_logits_of_the_wrong_shape_are_rejected():
    with pytest.raises(ValueError, match="num_rows=2"):
        Sampler()(torch.zeros(3, VOCAB), [row(), row()])


def test_the_callers_logits_are_not_modified():
    logits = torch.randn(1, VOCAB, generator=torch.Generator().manual_seed(10))
    before = logits.clone()
    Sampler()(logits, [row(output=[1], repetition_penalty=2.0, top_k=3, min_p=0.1)])
    assert torch.equal(logits, before)


def test_logit_bias_adds_to_the_listed_tokens_of_its_own_row_only():
    logits = torch.randn(3, VOCAB, generator=torch.Generator().manual_seed(1))
    params = [
        SamplingParams(logit_bias={4: 2.5, 9: -1.0}),
        SamplingParams(),
        SamplingParams(logit_bias={4: -100.0}),
    ]
    expected = logits.clone()
    expected[0, 4] += 2.5
    expected[0, 9] -= 1.0
    expected[2, 4] -= 100.0
    assert torch.equal(apply_logit_bias(logits, params), expected)


def test_a_banned_token_is_never_sampled_and_a_forced_one_always_is():
    logits = torch.zeros(1, VOCAB)  # uniform: every token equally likely before the bias
    banned = draw_counts(logits, SamplingParams(logit_bias={5: -100.0}), draws=4000, seed=2)
    assert banned[5] == 0 and sum(banned) == 4000
    forced = draw_counts(logits, SamplingParams(logit_bias={7: 100.0}), draws=500, seed=3)
    assert forced[7] == 500


def test_best_of_makes_the_sampler_report_the_chosen_tokens_logprob():
    logits = torch.randn(2, VOCAB, generator=torch.Generator().manual_seed(4))
    out = Sampler()(logits, [row(temperature=0.0, n=1, best_of=3), row(temperature=0.0)])
    expected = torch.log_softmax(logits, dim=-1).gather(1, out.token_ids.unsqueeze(1)).squeeze(1)
    assert torch.allclose(out.logprobs, expected)
