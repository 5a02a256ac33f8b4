"""The embedding and lm_head split by vocabulary rows across tensor-parallel ranks.

Each rank holds a range of rows (the last rank's part padded with zero rows). A token's embedding
comes from the one rank that holds its row (the others add zeros); each rank's logits cover its
rows and are gathered, so every rank ends with the whole vocabulary's logits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pagoda_worker.parallel.group import TensorParallel


class VocabParallelEmbedding(nn.Module):
    def __init__(self, rows: range, hidden_size: int, tp: TensorParallel) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(len(rows), hidden_size))
        nn.init.normal_(self.weight)  # as nn.Embedding: random (dummy) weights look real
        self.first = rows.start
        self.tp = tp

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.tp.size == 1:
            return F.embedding(input_ids, self.weight)
        local = input_ids - self.first
        elsewhere = (local < 0) | (local >= self.weight.shape[0])
        hidden = F.embedding(local.masked_fill(elsewhere, 0), self.weight)
        return self.tp.all_reduce(hidden.masked_fill(elsewhere[:, None], 0))


class ParallelLMHead(nn.Module):
    def __init__(self, rows: range, vocab_size: int, hidden_size: int, tp: TensorParallel) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(len(rows), hidden_size))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # as nn.Linear
        self.vocab_size = vocab_size
        self.tp = tp

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits [rows, vocab] on every rank."""
        logits = self.tp.all_gather(F.linear(hidden, self.weight))
        return logits[:, : self.vocab_size]  # drop the padding rows' logits
