"""All-reduce time per step under tensor parallelism: the two all-reduces per layer (after o_proj
and down_proj) of a model shape, for the rows of typical steps, timed alone between N ranks
(NCCL on GPUs, gloo on CPU). The engine's step time minus this is what splitting saved.

    python bench/allreduce.py --ranks 2 --shape llama-3.1-8b
    python bench/allreduce.py --ranks 2 --shape llama-3.1-70b

Each size: warm-up, then the median of 5 rounds of 20 back-to-back all-reduces (CUDA events on
GPUs). Keep NVLink multicast off on shared machines: NCCL_NVLS_ENABLE=0 (set here by default).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from throughput import SHAPES

STEP_ROWS = (1, 8, 32, 64, 128, 256, 1024, 8192)  # decode batches, then prefill chunks
ROUNDS, PER_ROUND = 5, 20


def round_seconds(x: torch.Tensor) -> float:
    """Seconds per all-reduce over one round."""
    if x.is_cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(PER_ROUND):
            dist.all_reduce(x)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / PER_ROUND
    began = time.perf_counter()
    for _ in range(PER_ROUND):
        dist.all_reduce(x)
    return (time.perf_counter() - began) / PER_ROUND


def rank_main(rank: int, ranks: int, store: str, hidden: int, layers: int, cuda: bool) -> None:
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"file://{store}",
                            rank=rank, world_size=ranks)  # fmt: skip
    dtype = torch.bfloat16 if cuda else torch.float32
    if rank == 0:
        print(f"{ranks} ranks on {torch.cuda.get_device_name() if cuda else 'CPU'}, hidden "
              f"{hidden}, {layers} layers: 2 all-reduces per layer")  # fmt: skip
        print(f"{'rows':>6} {'MiB':>8} {'us/all-reduce':>14} {'ms/step':>9}")
    for rows in STEP_ROWS:
        x = torch.randn(rows, hidden, dtype=dtype, device=device)
        round_seconds(x)  # warm-up: connects, and sizes NCCL's buffers
        seconds = statistics.median(round_seconds(x) for _ in range(ROUNDS))
        if rank == 0:
            mib, step_ms = x.numel() * x.element_size() / 2**20, seconds * 2 * layers * 1e3
            print(f"{rows:>6} {mib:>8.2f} {seconds * 1e6:>14.1f} {step_ms:>9.2f}")
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama-3.1-8b")
    parser.add_argument("--cpu", action="store_true", help="gloo on CPU, even with GPUs")
    args = parser.parse_args()
    cuda = torch.cuda.is_available() and not args.cpu
    if cuda and torch.cuda.device_count() < args.ranks:
        raise SystemExit(f"{args.ranks} ranks need {args.ranks} GPUs; "
                         f"{torch.cuda.device_count()} visible")  # fmt: skip
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    shape = SHAPES[args.shape]
    with tempfile.TemporaryDirectory() as folder:
        store = str(Path(folder) / "store")
        mp.spawn(
            rank_main,
            nprocs=args.ranks,
            args=(args.ranks, store, shape["hidden_size"], shape["num_hidden_layers"], cuda),
        )


if __name__ == "__main__":
    main()
