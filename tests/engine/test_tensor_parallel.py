"""Tensor parallelism on CPU (gloo, one process per rank): a model split across 2 ranks answers
token for token as transformers (and so as the unsplit engine) on the mixed batch, whatever its
shape: stories260K, random members with biases, q/k norms, tied embeddings, a vocabulary that
does not split evenly, and fewer KV heads than ranks. Each rank reads only its slices."""

from __future__ import annotations

import time

import pytest
import torch
from pagoda_worker.engine.config import EngineConfig
from pagoda_worker.engine.llm_engine import LLMEngine
from pagoda_worker.engine.sampling_params import SamplingParams
from pagoda_worker.models.loader import load_model
from pagoda_worker.models.source import ModelLoadError
from pagoda_worker.parallel.followers import RankLost
from pagoda_worker.parallel.group import TensorParallel

from tests.conftest import make_tiny_model
from tests.engine.workloads import (
    check_against_transformers,
    mixed_workload,
    run_staggered,
    tight_engine,
)
from tests.models.fp8_checkpoint import write_fp8_checkpoint

TP2 = {"tensor_parallel_size": 2, "cpu_threads": 1}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def odd_models(tmp_path_factory):
    """Shapes the even split of the tiny models does not cover."""
    root = tmp_path_factory.mktemp("tp-models")
    return {
        # One KV head for two ranks (each holds a copy); 515 rows of vocabulary: 258 + 257.
        "shared-kv": make_tiny_model(
            "llama3", root, name="shared-kv", num_key_value_heads=1, vocab_size=515
        ),
        # Four KV heads, four query heads: each rank two of each.
        "mha": make_tiny_model("qwen3", root, name="mha", num_key_value_heads=4),
    }


def test_stories260k_split_in_two_matches_transformers(stories_dir):
    check_against_transformers(stories_dir, seed=0, **TP2).close()


def test_split_in_two_matches_the_unsplit_engine_step_for_step(stories_dir):
    """The same tokens as TP=1 on another mixed batch, with async scheduling off too."""
    work = mixed_workload(seed=3)
    for settings in ({}, {"async_scheduling": False}):
        unsplit = run_staggered(tight_engine(stories_dir, **settings), work)
        engine = tight_engine(stories_dir, **settings, **TP2)
        assert run_staggered(engine, work) == unsplit
        engine.close()


@pytest.mark.parametrize("family", ["qwen2", "qwen3"])  # q/k/v bias + sharded files; q/k norms
def test_random_models_split_in_two_match_transformers(tiny_models, family):
    check_against_transformers(tiny_models[family], seed=1, **TP2).close()


@pytest.mark.parametrize("shape", ["shared-kv", "mha"])
def test_uneven_shapes_split_in_two_match_transformers(odd_models, shape):
    check_against_transformers(odd_models[shape], seed=2, **TP2).close()


def test_prompt_logprobs_match_the_unsplit_engine(stories_dir):
    """Scoring a prompt gathers logits from every rank, as sampling does."""
    params = SamplingParams(temperature=0.0, max_tokens=3, prompt_logprobs=2, logprobs=2)
    prompt = [1, 345, 56, 78, 99, 123, 45, 6, 7, 200]
    answers = []
    for settings in ({}, TP2):
        engine = LLMEngine(EngineConfig(model=str(stories_dir), **settings))
        engine.add_request(prompt, params)
        outputs = []
        while engine.has_unfinished_requests():
            outputs += engine.step()
        engine.close()
        answers.append(outputs[-1])
    unsplit, split = answers
    assert split.outputs[0].token_ids == unsplit.outputs[0].token_ids
    for ours, theirs in zip(split.prompt_logprobs[1:], unsplit.prompt_logprobs[1:], strict=True):
        assert ours.token_id == theirs.token_id
        assert ours.logprob == pytest.approx(theirs.logprob, abs=1e-4)
        assert list(ours.top) == list(theirs.top)


# The bf16 checkpoint, and FP8 ones (compressed-tensors): weight scales per output channel, or
# one per tensor with static input scales.
CHECKPOINTS = {
    "bf16": None,
    "fp8 per channel": {"weights": "channel"},
    "fp8 per tensor": {"weights": "tensor", "static_input": True},
}


@pytest.mark.parametrize("checkpoint", CHECKPOINTS)
@pytest.mark.parametrize("rank", [0, 1])
def test_a_rank_loads_exactly_its_slices(odd_models, tmp_path, checkpoint, rank):
    """Rank r of 2 holds rows/columns r of each split weight (and of its bias and FP8 scales),
    the shared KV head and the zero-padded vocabulary rows; nothing else."""
    folder, dtype = odd_models["shared-kv"], torch.float32
    if CHECKPOINTS[checkpoint] is not None:
        folder, dtype = tmp_path / "fp8", torch.bfloat16
        write_fp8_checkpoint(odd_models["shared-kv"], folder, **CHECKPOINTS[checkpoint])
    whole, _ = load_model(folder, dtype, CPU, "safetensors")
    part, _ = load_model(folder, dtype, CPU, "safetensors", tp=TensorParallel(rank, 2))
    full = dict(whole.named_parameters())
    for name, tensor in part.named_parameters():
        expected = rank_part(name, full[name], rank)
        assert tensor.dtype == expected.dtype and tensor.shape == expected.shape, name
        as_bytes = [t.reshape(-1).view(torch.uint8) for t in (tensor, expected)]  # FP8 included
        assert torch.equal(*as_bytes), name
    assert part.shards.num_kv_heads == 1


def rank_part(name: str, full: torch.Tensor, rank: int) -> torch.Tensor:
    """What rank `rank` of 2 should hold of the shared-kv model's parameter `name`: 4 query
    heads and 1 KV head of 16 dims, hidden 64, intermediate 128, 515 rows of vocabulary."""
    q, kv, vocab_part = 4 * 16, 16, 258
    module, _, leaf = name.rpartition(".")
    module = module.rpartition(".")[2]
    if module == "qkv_proj" and leaf != "input_scale":  # weight, bias or per-row scale
        mine = slice(rank * q // 2, (rank + 1) * q // 2)
        return torch.cat([full[:q][mine], full[q : q + kv], full[q + kv :]])
    if module == "gate_up_proj" and leaf != "input_scale":
        gate, up = full.chunk(2)
        return torch.cat([gate.chunk(2)[rank], up.chunk(2)[rank]])
    if module == "o_proj" and leaf == "weight":
        return full[:, rank * q // 2 : (rank + 1) * q // 2]
    if module == "down_proj" and leaf == "weight":
        return full.chunk(2, dim=1)[rank]
    if module in ("embed_tokens", "lm_head"):
        rows = full[rank * vocab_part : (rank + 1) * vocab_part]
        return torch.cat([rows, rows.new_zeros(vocab_part - len(rows), rows.shape[1])])
    return full  # norms, row-parallel layers' scales, input scales: every rank holds them whole


def test_a_split_the_model_does_not_allow_is_refused(stories_dir):
    refusal = r"tensor_parallel_size 3 .* divide the model's 8 attention heads"
    with pytest.raises(ModelLoadError, match=refusal):
        LLMEngine(EngineConfig(model=str(stories_dir), tensor_parallel_size=3, cpu_threads=1))


def test_a_dead_rank_is_named_before_any_step_waits_for_it(stories_dir):
    """Noticed while idle; the next step raises before it sends the follower anything, so under
    NCCL no collective waits for the dead rank."""
    engine = LLMEngine(EngineConfig(model=str(stories_dir), **TP2))
    followers = engine.core.followers
    assert followers is not None
    [process] = followers.processes
    try:
        engine.core.check_ranks()  # all there
        process.kill()
        process.wait()
        named = rf"tensor-parallel rank 1 \(pid {process.pid}\) exited \(-9\)"
        deadline = time.monotonic() + 10  # the watcher thread sees the exit at once
        while followers.lost is None:
            assert time.monotonic() < deadline, "the dead rank went unnoticed"
            time.sleep(0.01)
        with pytest.raises(RankLost, match=named):
            engine.core.check_ranks()
        engine.add_request([1, 2, 3], SamplingParams(max_tokens=2))
        with pytest.raises(RankLost, match=named):
            engine.step()
    finally:
        engine.close()
