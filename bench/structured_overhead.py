"""What grammar-constrained decoding costs per token: the same batch decoded free, then with every
request constrained by a JSON schema that never completes within max_tokens (an array of at
least 10,000 integers), so both runs produce exactly the same number of tokens.

Printed: seconds, output tok/s and the time per decode step for both, and the difference per
constrained token (the host's mask computation, its copy and the masked sampling, minus what
overlaps the forward pass).

    python bench/structured_overhead.py                                  # CPU: stories260K
    python bench/structured_overhead.py --model <qwen3-8b-shape> --engine-arg load_format=dummy \
        --engine-arg dtype=bfloat16 --batch 64 --output-len 256          # GPU: Qwen's 151k vocab
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.extend(  # the checkout's packages, uninstalled
    str(Path(__file__).resolve().parents[1] / root)
    for root in ("", "worker", "gateway", "operator")
)
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pagoda_worker.engine.config import EngineConfig
from pagoda_worker.engine.llm_engine import LLMEngine
from pagoda_worker.engine.sampling_params import SamplingParams, StructuredOutput
from pagoda_worker.models.source import DEFAULT_MODEL
from throughput import parse_settings, sync

ENDLESS_ARRAY = {"type": "array", "items": {"type": "integer"}, "minItems": 10000}


def run(engine: LLMEngine, prompts: list[list[int]], params: SamplingParams) -> tuple[float, int]:
    """(seconds, output tokens) for the batch submitted at once."""
    sync()
    start = time.perf_counter()
    for prompt in prompts:
        engine.add_request(prompt, params)
    produced = 0
    while engine.has_unfinished_requests():
        produced += sum(len(o.outputs[0].new_token_ids) for o in engine.step())
    sync()
    return time.perf_counter() - start, produced


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2, help="free/constrained pairs, alternating")
    parser.add_argument("--engine-arg", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    engine = LLMEngine(EngineConfig(model=args.model, **parse_settings(args.engine_arg)))
    vocab = engine.core.model.shape.vocab_size
    rng = random.Random(0)
    prompts = [
        [rng.randrange(10, min(vocab, 30000)) for _ in range(args.prompt_len)]
        for _ in range(args.batch)
    ]
    free = SamplingParams(max_tokens=args.output_len, ignore_eos=True, temperature=1.0, seed=1)
    constrained = SamplingParams(
        max_tokens=args.output_len, temperature=1.0, seed=1,
        structured_output=StructuredOutput(json.dumps(ENDLESS_ARRAY)),
    )  # fmt: skip
    run(engine, prompts[:2], free)  # warm-up: kernels, graphs, the grammar's compilation
    run(engine, prompts[:2], constrained)
    results = {"free": [], "constrained": []}
    for _ in range(args.rounds):
        for name, params in (("free", free), ("constrained", constrained)):
            results[name].append(run(engine, prompts, params))

    print(f"{args.batch} requests x ({args.prompt_len} prompt + {args.output_len} output tokens), "
          f"vocabulary {vocab}, {engine.core.device}")  # fmt: skip
    best = {}
    for name, runs in results.items():
        seconds, tokens = min(runs)
        assert tokens == args.batch * args.output_len, f"{name}: {tokens} tokens"
        best[name] = seconds
        per_step = seconds / args.output_len * 1e3
        print(f"{name:12} {seconds:7.3f} s (best of {len(runs)}), {tokens / seconds:9.0f} output "
              f"tok/s, {per_step:7.2f} ms per step")  # fmt: skip
    extra = (best["constrained"] - best["free"]) / (args.batch * args.output_len) * 1e6
    ratio = best["constrained"] / best["free"]
    print(f"constrained/free: {ratio:.3f}x; {extra:.1f} µs more per constrained token")
    return 0


if __name__ == "__main__":
    sys.exit(main())
