"""Engine behaviour beyond greedy agreement: seeds, logprobs, n > 1, stops, aborts, limits."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from pagoda_worker.engine.config import EngineConfig
from pagoda_worker.engine.errors import ContextLengthExceeded, InvalidRequest
from pagoda_worker.engine.llm import LLM
from pagoda_worker.engine.llm_engine import LLMEngine
from pagoda_worker.engine.outputs import FinishReason
from pagoda_worker.engine.sampling_params import SamplingParams
from pagoda_worker.models.loader import ModelLoadError
from transformers import AutoModelForCausalLM

PROMPT = "Once upon a time"
KNOWN_GOOD = ", there was a little girl named Lily. She loved to play outside in the park."


@pytest.fixture(scope="module")
def llm(stories_dir) -> LLM:
    return LLM(str(stories_dir), block_size=8, max_num_batched_tokens=64)


def run_all(engine: LLMEngine) -> dict:
    done = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                done[out.request_id] = out
    return done


def test_greedy_known_good_text(llm):
    [out] = llm.generate(PROMPT, SamplingParams(temperature=0.0, max_tokens=30))
    assert out.outputs[0].text.startswith(KNOWN_GOOD)
    assert out.outputs[0].finish_reason is FinishReason.LENGTH


@pytest.mark.parametrize("ranks", ["1", "2"])
def test_cli_generate_prints_transformers_continuation(stories_dir, ranks):
    result = subprocess.run(
        [sys.executable, "-m", "pagoda.cli", "generate", "--model", str(stories_dir), "--prompt",
         PROMPT, "--max-tokens", "30", "--temperature", "0", "--tensor-parallel-size", ranks],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert result.stdout.startswith(PROMPT + KNOWN_GOOD)
    assert "WARNING" not in result.stderr  # with 2 ranks: the follower was stopped, not left


def test_cli_generate_names_the_problem(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pagoda.cli", "generate", "--model", str(tmp_path), "--prompt", "x"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "has no config.json" in result.stderr
    assert "Traceback" not in result.stderr


def test_seeded_sampling_is_independent_of_batch(llm):
    params = SamplingParams(temperature=0.9, top_p=0.95, seed=1234, max_tokens=20)
    [alone] = llm.generate(PROMPT, params)
    crowd = [PROMPT + " there", "The dog", PROMPT, "Tom and"]
    others = [SamplingParams(temperature=1.0, max_tokens=25)] * 2
    outs = llm.generate(crowd, [*others, params, SamplingParams(temperature=1.2, max_tokens=5)])
    assert outs[2].outputs[0].token_ids == alone.outputs[0].token_ids


def test_n_completions_share_prompt_blocks_and_differ(llm):
    engine = llm.engine
    prompt = llm.encode("Once upon a time, there was a little girl named Lily. She loved to play")
    before = engine.stats().prefix_cache_hits
    params = SamplingParams(n=4, temperature=1.0, seed=7, max_tokens=12)
    rid = engine.add_request(prompt, params)
    out = run_all(engine)[rid]
    assert [c.index for c in out.outputs] == [0, 1, 2, 3]
    assert len({tuple(c.token_ids) for c in out.outputs}) > 1, "seeded siblings should differ"
    full_blocks = (len(prompt) - 1) // engine.core.config.block_size
    assert (
        engine.stats().prefix_cache_hits - before >= 3 * full_blocks * engine.core.config.block_size
    )


def test_logprobs_match_transformers(llm, stories_dir):
    params = SamplingParams(temperature=0.0, max_tokens=8, logprobs=5)
    [out] = llm.generate(PROMPT, params)
    completion = out.outputs[0]
    ids = llm.encode(PROMPT) + completion.token_ids
    hf = AutoModelForCausalLM.from_pretrained(stories_dir, dtype=torch.float32)
    with torch.no_grad():
        reference = torch.log_softmax(hf(torch.tensor([ids])).logits[0].float(), dim=-1)
    start = len(ids) - len(completion.token_ids) - 1
    for step, entry in enumerate(completion.logprobs):
        row = reference[start + step]
        assert entry.logprob == pytest.approx(row[entry.token_id].item(), abs=1e-4)
        top = torch.topk(row, 5)
        assert list(entry.top) == top.indices.tolist()
        for token_id, logprob in entry.top.items():
            assert logprob == pytest.approx(row[token_id].item(), abs=1e-4)


def test_stop_string_is_trimmed(llm):
    [out] = llm.generate(PROMPT, SamplingParams(temperature=0.0, max_tokens=30, stop=["Lily"]))
    completion = out.outputs[0]
    assert completion.text == ", there was a little girl named "
    assert completion.finish_reason is FinishReason.STOP


def test_streamed_deltas_add_up_to_the_text(llm):
    engine = llm.engine
    rid = engine.add_request(llm.encode(PROMPT), SamplingParams(temperature=0.0, max_tokens=40))
    pieces, final = [], None
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.request_id == rid:
                pieces.append(out.outputs[0].new_text)
                final = out
    assert "".join(pieces) == final.outputs[0].text
    assert final.outputs[0].text.startswith(KNOWN_GOOD)


def test_abort_frees_blocks_and_reports_abort(llm):
    engine = llm.engine
    rid = engine.add_request(llm.encode(PROMPT), SamplingParams(max_tokens=100, ignore_eos=True))
    engine.step()
    engine.step()
    assert engine.stats().num_free_blocks < engine.stats().num_gpu_blocks
    engine.abort_request(rid)
    [out] = engine.step()
    assert out.finished and out.outputs[0].finish_reason is FinishReason.ABORT
    assert engine.stats().num_free_blocks == engine.stats().num_gpu_blocks
    assert not engine.has_unfinished_requests()


def test_ignore_eos_and_max_tokens(llm):
    [out] = llm.generate(PROMPT, SamplingParams(temperature=0.0, max_tokens=200, ignore_eos=True))
    assert len(out.outputs[0].token_ids) == 200


def test_context_window_is_enforced(llm):
    with pytest.raises(ContextLengthExceeded, match="context window"):
        llm.engine.add_request([1] * 500, SamplingParams(max_tokens=100))
    with pytest.raises(InvalidRequest, match="prompt"):
        llm.engine.add_request([], SamplingParams())


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: (d / "config.json").write_text("{not json"), "config.json"),
        (lambda d: (d / "model.safetensors").write_bytes(b"garbage"), "not a readable safetensors"),
        (lambda d: (d / "model.safetensors").unlink(), "no model.safetensors"),
    ],
)
def test_broken_model_folders_get_one_clear_error(stories_dir, tmp_path, setup, message):
    for f in stories_dir.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    setup(tmp_path)
    with pytest.raises(ModelLoadError, match=message):
        LLMEngine(EngineConfig(model=str(tmp_path)))


def test_unsupported_architecture_is_named(stories_dir, tmp_path):
    for f in stories_dir.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    config = (tmp_path / "config.json").read_text().replace("LlamaForCausalLM", "GPT2LMHeadModel")
    (tmp_path / "config.json").write_text(config)
    with pytest.raises(ModelLoadError, match="GPT2LMHeadModel is not supported"):
        LLMEngine(EngineConfig(model=str(tmp_path)))


def test_wrong_dtype_is_refused(stories_dir):
    with pytest.raises(ValueError, match="dtype"):
        LLMEngine(EngineConfig(model=str(stories_dir), dtype="int8"))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_weights_load_and_generate(stories_dir, dtype):
    engine = LLMEngine(EngineConfig(model=str(stories_dir), dtype=dtype))
    assert engine.core.model.lm_head.weight.dtype == getattr(torch, dtype)
    assert engine.core.runner.kv_caches[0].dtype == getattr(torch, dtype)
    rid = engine.add_request([1, 403, 407, 261, 378], SamplingParams(temperature=0, max_tokens=8))
    [out] = run_all(engine).values()
    assert out.request_id == rid and len(out.outputs[0].token_ids) == 8


def test_sharded_checkpoints_load(tiny_models):
    folder = tiny_models["qwen2"]  # saved with a small max_shard_size
    assert (folder / "model.safetensors.index.json").is_file()
    assert len(list(folder.glob("model-*.safetensors"))) > 1
    LLMEngine(EngineConfig(model=str(folder)))
