"""The tensor-parallel group: this process's rank among the processes that split one model, and
the collectives the model's layers need (NCCL on CUDA, gloo on CPU).

With one rank every collective returns its input: an unsplit model runs exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

# A collective waits this long for a missing rank before failing (rather than hanging forever).
COLLECTIVE_TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class TensorParallel:
    rank: int = 0
    size: int = 1

    @property
    def is_driver(self) -> bool:
        """Rank 0 schedules and samples; the other ranks run the steps it sends them."""
        return self.rank == 0

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """The sum over the ranks of each one's partial result, in place."""
        if self.size > 1:
            dist.all_reduce(x)
        return x

    def all_gather(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's `x`, concatenated along the last dimension in rank order."""
        if self.size == 1:
            return x
        parts = [torch.empty_like(x) for _ in range(self.size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=-1)

    def broadcast(self, x: torch.Tensor | None, numel: int, dtype: torch.dtype,
                  device: torch.device) -> torch.Tensor:  # fmt: skip
        """The driver's `x` on every rank (the others pass None and say what it is like)."""
        if self.size == 1:
            assert x is not None  # one rank is the driver
            return x
        if x is None:
            x = torch.empty(numel, dtype=dtype, device=device)
        dist.broadcast(x, src=0)
        return x

    def min(self, value: int, device: torch.device) -> int:
        """The smallest of the ranks' values."""
        if self.size == 1:
            return value
        x = torch.tensor([value], dtype=torch.int64, device=device)
        dist.all_reduce(x, op=dist.ReduceOp.MIN)
        return int(x.item())


SINGLE = TensorParallel()


def join(rank: int, size: int, store_file: str, device: torch.device) -> TensorParallel:
    """Join the group through a file every rank can read (no network port to pick or race for)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL's buffers and streams go on this rank's GPU
    dist.init_process_group(
        backend="nccl" if device.type == "cuda" else "gloo",
        init_method=f"file://{store_file}",
        rank=rank,
        world_size=size,
        timeout=COLLECTIVE_TIMEOUT,
    )
    return TensorParallel(rank, size)


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
