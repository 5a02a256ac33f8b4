"""Tensor parallelism on CPU (gloo, one process per rank): a model split across 2 ranks answers
token for token as transformers (and so as the unsplit engine) on the mixed batch, whatever its
shape: stories260K, random members with biases, q/k norms, tied embeddings, a vocabulary that
does not split evenly, and fewer KV heads than ranks. Each rank reads only its slices."""

from __future__ import annotations

import pytest
import torch
from pagoda_worker.engine.config import EngineConfig
from pagoda_worker.engine.llm_engine import LLMEngine
from pagoda_worker.engine.sampling_params import SamplingParams
from pagoda_worker.models.loader import load_model
from pagoda_worker.models.source import ModelLoadError
from pagoda_worker.parallel.group import TensorParallel

from tests.conftest import make_tiny_model
from tests.engine.workloads import check_against_transformers

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


@pytest.mark.parametrize("rank", [0, 1])
def test_a_rank_loads_exactly_its_slices(odd_models, rank):
    """Rank r of 2 holds rows/columns r of each split weight, the shared KV head and the
    zero-padded vocabulary rows; nothing else."""
    folder = odd_models["shared-kv"]
    whole, _ = load_model(folder, torch.float32, CPU, "safetensors")
    part, _ = load_model(folder, torch.float32, CPU, "safetensors",
                         tp=TensorParallel(rank, 2))  # fmt: skip
    weights = dict(whole.named_parameters())
    head_dim, q, kv = 16, 4 * 16, 1 * 16  # 4 query heads, 1 KV head of 16 dims; hidden 64
    for name, tensor in part.named_parameters():
        full = weights[name]
        if name.endswith("qkv_proj.weight"):
            mine = slice(rank * q // 2, (rank + 1) * q // 2)
            expected = torch.cat([full[:q][mine], full[q : q + kv], full[q + kv :]])
        elif name.endswith("o_proj.weight"):
            expected = full[:, rank * q // 2 : (rank + 1) * q // 2]
        elif name.endswith("gate_up_proj.weight"):
            gate, up = full.chunk(2)
            expected = torch.cat([gate.chunk(2)[rank], up.chunk(2)[rank]])
        elif name.endswith("down_proj.weight"):
            expected = full.chunk(2, dim=1)[rank]
        elif name in ("model.embed_tokens.weight", "lm_head.weight"):
            rows = full[rank * 258 : (rank + 1) * 258]
            expected = torch.cat([rows, rows.new_zeros(258 - len(rows), rows.shape[1])])
        else:  # norms: every rank holds them whole
            expected = full
        assert torch.equal(tensor, expected), name
    assert head_dim * part.shards.num_kv_heads == kv


def test_a_split_the_model_does_not_allow_is_refused(stories_dir):
    refusal = r"tensor_parallel_size 3 .* divide the model's 8 attention heads"
    with pytest.raises(ModelLoadError, match=refusal):
        LLMEngine(EngineConfig(model=str(stories_dir), tensor_parallel_size=3, cpu_threads=1))
