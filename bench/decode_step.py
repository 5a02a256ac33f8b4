"""Where a decode step's device time goes, at a model shape with random bf16 weights.

Starts the engine, brings `--batch` requests of `--context` prompt tokens into decode, then
replays the captured CUDA graph of that batch size and prints: its median time against the floor
(weights + KV read once at the copy bandwidth measured in the same run), the logits + argmax that
run after it, and the kernels inside the graph grouped by name (torch profiler). Needs CUDA.

    python bench/decode_step.py --batch 1 --context 256
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pagoda_worker.engine.config import EngineConfig
from pagoda_worker.engine.llm_engine import LLMEngine
from pagoda_worker.engine.sampling_params import SamplingParams
from throughput import SHAPES, write_shape


def median_ms(fn, repeats: int = 50) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def copy_bandwidth() -> float:
    """Bytes read + written per second by a 2 GiB device-to-device copy."""
    src = torch.randn(2**29, device="cuda")
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / (median_ms(lambda: dst.copy_(src), 20) / 1e3)


def kernels_per_replay(replay, repeats: int = 10) -> list[tuple[str, float]]:
    """(kernel name, ms per replay), largest first."""
    activities = [torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(repeats):
            replay()
        torch.cuda.synchronize()
    totals: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            totals[event.name[:70]] += event.device_time / 1e3 / repeats
    return sorted(totals.items(), key=lambda kv: -kv[1])


@torch.inference_mode()
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama-3.1-8b")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--context", type=int, default=256)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = write_shape(args.shape, Path(tmp))
        engine = LLMEngine(
            EngineConfig(model=str(model_dir), load_format="dummy", dtype="bfloat16")
        )
    vocab = engine.core.model.shape.vocab_size
    generator = torch.Generator().manual_seed(0)
    for _ in range(args.batch):
        prompt = torch.randint(10, vocab - 10, (args.context,), generator=generator).tolist()
        engine.add_request(prompt, SamplingParams(temperature=0.0, max_tokens=64, ignore_eos=True))
    scheduler = engine.core.scheduler
    while scheduler.waiting or any(len(s.output_token_ids) < 2 for s in scheduler.running):
        engine.step()  # until every request is decoding
    graphs = engine.core.runner.graphs
    batch = graphs.batch_for(args.batch)
    hidden = graphs.graphs[batch][1]

    def replay():
        graphs.replay(batch)

    def logits_and_argmax():
        engine.core.model.compute_logits(hidden[: args.batch]).float().argmax(dim=-1)

    graph_ms = median_ms(replay)
    tail_ms = median_ms(logits_and_argmax)
    bandwidth = copy_bandwidth()
    layers_bytes = sum(
        p.numel() * p.element_size() for p in engine.core.model.model.layers.parameters()
    )
    head_bytes = sum(p.numel() * p.element_size() for p in engine.core.model.lm_head.parameters())
    kv_bytes = sum(
        # K and V of the prompt plus the few tokens decoded so far (2-4), per layer
        2 * args.batch * (args.context + 4) * c.shape[3] * c.shape[4] * c.element_size()
        for c in engine.core.runner.kv_caches
    )
    graph_floor = (layers_bytes + kv_bytes) / bandwidth * 1e3
    print(f"{torch.cuda.get_device_name()}: {args.shape}, batch {args.batch} (graph {batch}), "
          f"context {args.context}; copy bandwidth {bandwidth / 1e12:.2f} TB/s")  # fmt: skip
    print(f"graph replay     {graph_ms:7.3f} ms   floor {graph_floor:6.3f} ms "
          f"({graph_floor / graph_ms:.0%})")  # fmt: skip
    print(f"logits + argmax  {tail_ms:7.3f} ms   floor {head_bytes / bandwidth * 1e3:6.3f} ms")
    rows = kernels_per_replay(replay)
    busy = sum(t for _, t in rows)
    print(f"kernels busy     {busy:7.3f} ms of the replay; gaps {graph_ms - busy:.3f} ms")
    for name, t in rows[:14]:
        print(f"  {t:7.3f} ms  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
