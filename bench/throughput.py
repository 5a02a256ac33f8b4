"""Offline throughput and latency: Pagoda's engine against transformers' `generate`, in one run.

    python bench/throughput.py                              # CPU: stories260K, a mixed workload
    python bench/throughput.py --preset anchor-a            # GPU: Llama-3.1-8B shape, random bf16
    python bench/throughput.py --preset anchor-a-latency    # GPU: batch-1 decode, TTFT
    python bench/throughput.py --preset anchor-a --skip-baseline \
        --variant quantization=fp8 --variant kv_cache_dtype=fp8  # each against the plain engine
    python bench/throughput.py --preset anchor-a --skip-baseline \
        --variant tensor_parallel_size=2                     # 2 GPUs against 1
    python bench/throughput.py --preset anchor-a --shape llama-3.1-70b --skip-baseline \
        --engine-arg tensor_parallel_size=2                  # a model one GPU cannot hold

Throughput: both sides get the same prompts (token ids) and produce the same number of tokens
each (EOS ignored). The baseline runs `generate` in static, left-padded batches. Printed: total
tok/s (prompt + output) and output tok/s for both, and the ratio.
Latency: one request at a time through the engine: ms per output token of a batch-1 decode, and
the time to first token of a long prompt (fresh prompts each time: no prefix-cache hits).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.extend(str(REPO / root) for root in ("", "worker", "gateway", "operator"))

from pagoda_worker.engine.config import EngineConfig  # noqa: E402
from pagoda_worker.engine.llm_engine import LLMEngine  # noqa: E402
from pagoda_worker.engine.sampling_params import SamplingParams  # noqa: E402
from pagoda_worker.models.source import DEFAULT_MODEL  # noqa: E402

# Architectures by name, for random-weight runs of a real model's shape.
SHAPES = {
    "llama-3.1-8b": dict(
        architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=4096,
        intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, vocab_size=128256, max_position_embeddings=131072,
        rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=128000, eos_token_id=128001,
        rope_parameters=dict(
            rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
            high_freq_factor=4.0, original_max_position_embeddings=8192,
        ),
    ),
    "llama-3.2-1b": dict(
        architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=2048,
        intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, vocab_size=128256, max_position_embeddings=131072,
        rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=128000, eos_token_id=128001,
        rope_parameters=dict(
            rope_type="llama3", rope_theta=500000.0, factor=32.0, low_freq_factor=1.0,
            high_freq_factor=4.0, original_max_position_embeddings=8192,
        ),
    ),
}  # fmt: skip
# For tensor parallelism: about 141 GB of bf16 weights, more than one H200 holds.
SHAPES["llama-3.1-70b"] = SHAPES["llama-3.1-8b"] | dict(
    hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64
)


@dataclass
class Preset:
    model: str | None  # a model folder, or None for a random-weight shape
    shape: str | None
    num_requests: int
    input_len: tuple[int, int]
    output_len: int
    dtype: str
    baseline_batch: int
    floor_seconds: float | None = None  # the workload's lower bound on this card, if known
    latency: bool = False  # num_requests runs of one request each, instead of one batch
    ttft_input_len: int = 0  # latency: the prompt whose time to first token is measured


PRESETS = {
    "stories": Preset(
        model=str(DEFAULT_MODEL), shape=None, num_requests=64,
        input_len=(16, 128), output_len=64, dtype="float32", baseline_batch=16,
    ),
    # The GPU issue's anchor workload A: 155,627 prompt tokens, 256 outputs each.
    "anchor-a": Preset(
        model=None, shape="llama-3.1-8b", num_requests=256, input_len=(128, 1024),
        output_len=256, dtype="bfloat16", baseline_batch=64, floor_seconds=4.5,
    ),
    # The latency targets: 128-token prompt decoding 256 tokens; TTFT of 1,024 tokens.
    "anchor-a-latency": Preset(
        model=None, shape="llama-3.1-8b", num_requests=5, input_len=(128, 128), output_len=256,
        dtype="bfloat16", baseline_batch=1, latency=True, ttft_input_len=1024,
    ),
}  # fmt: skip


def parse_settings(pairs: list[str]) -> dict:
    """["key=value", ...] -> EngineConfig settings; values are JSON, or else strings."""
    values = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        try:
            values[key] = json.loads(text)
        except json.JSONDecodeError:
            values[key] = text
    return values


def describe(variant: dict) -> str:
    return "".join(f" {key}={value}" for key, value in variant.items())


def make_prompts(num: int, input_len: tuple[int, int], vocab: int) -> list[list[int]]:
    rng = random.Random(0)
    prompts = []
    for _ in range(num):
        length = rng.randint(*input_len)
        prompts.append([rng.randrange(10, vocab - 10) for _ in range(length)])
    return prompts


def write_shape(shape: str, folder: Path) -> Path:
    (folder / "config.json").write_text(json.dumps(SHAPES[shape]))
    return folder


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def start_engine(model_dir: Path, preset: Preset, engine_args: dict) -> LLMEngine:
    settings = dict(model=str(model_dir), dtype=preset.dtype, **engine_args)
    if preset.shape:
        settings["load_format"] = "dummy"
    started = time.perf_counter()
    engine = LLMEngine(EngineConfig(**settings))
    print(f"engine: started in {time.perf_counter() - started:.1f} s, "
          f"KV cache {engine.core.kv_capacity_tokens} tokens", file=sys.stderr)  # fmt: skip
    vocab = engine.core.model.shape.vocab_size
    for length in (16, min(600, engine.max_model_len - 4)):  # compiles every kernel once
        prompt = [10 + i % (vocab - 10) for i in range(length)]
        engine.add_request(prompt, SamplingParams(max_tokens=4, ignore_eos=True))
    while engine.has_unfinished_requests():
        engine.step()
    sync()
    return engine


def free(engine: LLMEngine) -> None:
    engine.close()  # its other tensor-parallel ranks, if any
    del engine
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def profiler(enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    return torch.profiler.profile(activities=activities)


def print_profile(prof) -> None:
    if prof is not None:
        for key in ("self_cuda_time_total", "self_cpu_time_total"):
            print(prof.key_averages().table(sort_by=key, row_limit=20), file=sys.stderr)


def record_plans(engine: LLMEngine) -> list[tuple[bool, int, int]]:
    """Wrap the scheduler to record each step's (decodes only?, sequences, tokens)."""
    plans = []
    schedule = engine.core.scheduler.schedule

    def recorded():
        plan = schedule()
        only_decodes = all(s.num_new_tokens == 1 for s in plan.scheduled)
        plans.append((only_decodes, len(plan.scheduled), plan.num_tokens))
        return plan

    engine.core.scheduler.schedule = recorded
    return plans


def print_step_summary(plans: list[tuple[bool, int, int]], seconds: list[float]) -> None:
    for kind in (True, False):
        rows = [(p, s) for p, s in zip(plans, seconds, strict=True) if p[0] == kind]
        if not rows:
            continue
        total = sum(s for _, s in rows)
        seqs = sum(p[1] for p, _ in rows) / len(rows)
        tokens = sum(p[2] for p, _ in rows) / len(rows)
        print(f"{'decode-only' if kind else 'mixed'} steps: {len(rows)}, {total:.2f} s, "
              f"{total / len(rows) * 1e3:.1f} ms/step, {seqs:.0f} seqs and {tokens:.0f} tokens "
              "per step", file=sys.stderr)  # fmt: skip


def run_engine(
    model_dir: Path, preset: Preset, prompts, engine_args: dict, profile: bool = False
) -> float:
    engine = start_engine(model_dir, preset, engine_args)
    params = SamplingParams(temperature=0.0, max_tokens=preset.output_len, ignore_eos=True)
    start = time.perf_counter()
    for prompt in prompts:
        engine.add_request(prompt, params)
    produced = 0
    plans = record_plans(engine)
    seconds = []
    with profiler(profile) as prof:
        while engine.has_unfinished_requests():
            began = time.perf_counter()
            for out in engine.step():
                produced += len(out.outputs[0].new_token_ids)
            seconds.append(time.perf_counter() - began)
        sync()
    elapsed = time.perf_counter() - start
    print_profile(prof)
    print_step_summary(plans, seconds)
    if torch.cuda.is_available():
        stats = torch.cuda.memory_stats()
        print(f"allocator: {stats['num_alloc_retries']} retries, {stats['num_device_alloc']} "
              f"device allocations, peak {stats['reserved_bytes.all.peak'] / 2**30:.1f} GiB "
              "reserved", file=sys.stderr)  # fmt: skip
    assert produced == preset.output_len * len(prompts), "every request must produce all tokens"
    free(engine)
    return elapsed


def run_latency(
    model_dir: Path, preset: Preset, prompts, engine_args: dict, profile: bool = False
) -> dict[str, float]:
    """Median over the prompts of: ms per output token after the first (batch-1 decode), and the
    time to first token of a fresh ttft_input_len-token prompt. A profile covers the first
    prompt's decode."""
    engine = start_engine(model_dir, preset, engine_args)
    rng = random.Random(1)
    vocab = engine.core.model.shape.vocab_size
    decode_ms, ttft_ms = [], []
    for i, prompt in enumerate(prompts):
        params = SamplingParams(temperature=0.0, max_tokens=preset.output_len, ignore_eos=True)
        engine.add_request(prompt, params)
        first = None  # when the first token reached the host
        with profiler(profile and i == 0) as prof:
            while engine.has_unfinished_requests():
                if engine.step() and first is None:
                    first = time.perf_counter()
            sync()
        decode_ms.append((time.perf_counter() - first) * 1e3 / (preset.output_len - 1))
        print_profile(prof)

        long_prompt = [rng.randrange(10, vocab - 10) for _ in range(preset.ttft_input_len)]
        start = time.perf_counter()
        engine.add_request(long_prompt, SamplingParams(max_tokens=1, ignore_eos=True))
        while engine.has_unfinished_requests():
            engine.step()
        ttft_ms.append((time.perf_counter() - start) * 1e3)
    free(engine)
    return {"decode ms/token": statistics.median(decode_ms), "TTFT ms": statistics.median(ttft_ms)}


def run_transformers(model_dir: Path, preset: Preset, prompts) -> float:
    from transformers import AutoConfig, AutoModelForCausalLM

    dtype = getattr(torch, preset.dtype)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if preset.shape:
        torch.manual_seed(0)
        with torch.device(device):
            config = AutoConfig.from_pretrained(model_dir)
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device)
    model.eval()
    pad = 0
    sync()
    start = time.perf_counter()
    for i in range(0, len(prompts), preset.baseline_batch):
        batch = prompts[i : i + preset.baseline_batch]
        width = max(len(p) for p in batch)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
        with torch.no_grad():
            out = model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=preset.output_len,
                min_new_tokens=preset.output_len, do_sample=False, pad_token_id=pad,
            )  # fmt: skip
        assert out.shape[1] == width + preset.output_len
    sync()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="stories")
    parser.add_argument(
        "--shape", choices=sorted(SHAPES),
        help="run the preset's workload on random weights of this model shape instead",
    )  # fmt: skip
    parser.add_argument("--num-requests", type=int)
    parser.add_argument("--output-len", type=int)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument(
        "--profile", action="store_true",
        help="print the plain engine's top CPU and CUDA ops: the whole run, or with a latency "
        "preset the first prompt's decode (timings include the profiler)",
    )  # fmt: skip
    parser.add_argument(
        "--engine-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="EngineConfig setting for the engine run, e.g. max_num_seqs=256 (JSON values)",
    )
    parser.add_argument(
        "--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
        help="also run the engine with these settings on top, and print its ratio to the "
        "plain engine run (repeatable), e.g. quantization=fp8",
    )  # fmt: skip
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    if args.shape:
        preset.model, preset.shape = None, args.shape
    preset.num_requests = args.num_requests or preset.num_requests
    preset.output_len = args.output_len or preset.output_len
    engine_args = parse_settings(args.engine_arg)
    variants = [parse_settings(v.split(",")) for v in args.variant]

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = write_shape(preset.shape, Path(tmp)) if preset.shape else Path(preset.model)
        vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
        prompts = make_prompts(preset.num_requests, preset.input_len, vocab)
        prompt_tokens = sum(len(p) for p in prompts)
        output_tokens = preset.output_len * len(prompts)
        total = prompt_tokens + output_tokens
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
        print(f"preset {args.preset} on {device}: {len(prompts)} requests, "
              f"{prompt_tokens} prompt + {output_tokens} output tokens")  # fmt: skip

        if preset.latency:
            for variant in [{}, *variants]:
                results = run_latency(
                    model_dir, preset, prompts, engine_args | variant, args.profile and not variant
                )
                for name, value in results.items():
                    print(f"pagoda engine{describe(variant)} {name}: {value:.2f}  "
                          f"({preset.input_len[0]}-token prompt, {preset.output_len} outputs; "
                          f"TTFT of {preset.ttft_input_len} tokens)")  # fmt: skip
            return 0
        seconds = run_engine(model_dir, preset, prompts, engine_args, args.profile)
        rows = [("pagoda engine", seconds)]
        for variant in variants:
            variant_seconds = run_engine(model_dir, preset, prompts, engine_args | variant)
            rows.append((f"pagoda engine{describe(variant)}", variant_seconds))
        if not args.skip_baseline:
            rows.append(("transformers generate", run_transformers(model_dir, preset, prompts)))

    width = max(24, *(len(name) + 2 for name, _ in rows))
    print(f"{'':{width}}{'seconds':>10}{'total tok/s':>14}{'output tok/s':>14}{'vs engine':>11}")
    for name, seconds in rows:
        print(f"{name:{width}}{seconds:10.2f}{total / seconds:14.0f}"
              f"{output_tokens / seconds:14.0f}{rows[0][1] / seconds:10.2f}x")  # fmt: skip
    if not args.skip_baseline:
        print(f"ratio (engine / transformers, total tok/s): {rows[-1][1] / rows[0][1]:.2f}x")
    if preset.floor_seconds:
        print(f"fraction of the {preset.floor_seconds} s floor: "
              f"{preset.floor_seconds / rows[0][1]:.1%}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
