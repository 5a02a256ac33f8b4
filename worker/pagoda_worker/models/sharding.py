"""What one rank holds of a tensor-parallel model, Megatron-style.

q/k/v and gate/up are split by output rows (column-parallel; their bias and FP8 weight scales
too), o_proj and down_proj by input columns (row-parallel: each rank's product is a partial sum,
all-reduced), the embedding and lm_head by vocabulary rows (padded to equal parts). Each rank
keeps its query heads' KV heads; with fewer KV heads than ranks, ranks share one (each holds a
copy). With one rank it holds all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from safetensors import safe_open

from pagoda_worker.models.source import ModelLoadError

# Checkpoint tensors (Llama naming) split along rows, by what the rows are.
QUERY_ROWS = ("q_proj",)
KV_ROWS = ("k_proj", "v_proj")
MLP_ROWS = ("gate_proj", "up_proj")
# Split along input columns.
QUERY_COLUMNS = ("o_proj",)
MLP_COLUMNS = ("down_proj",)
VOCAB_ROWS = ("embed_tokens", "lm_head")


@dataclass(frozen=True)
class Shards:
    size: int  # ranks
    head_dim: int
    heads: range  # query heads
    kv_heads: range
    intermediate: range  # MLP channels
    vocab: range  # vocabulary rows, up to the padded vocabulary (rows past the real one are 0)
    vocab_size: int  # the real vocabulary

    @classmethod
    def of(cls, shape, rank: int = 0, size: int = 1) -> Shards:
        """shape: a LlamaShape. Refuses splits the model's sizes do not allow."""
        heads, kv_heads = shape.num_heads, shape.num_kv_heads
        _require(heads % size == 0, size, f"divide the model's {heads} attention heads")
        _require(shape.intermediate_size % size == 0, size,
                 f"divide the model's intermediate size {shape.intermediate_size}")  # fmt: skip
        if kv_heads >= size:
            _require(kv_heads % size == 0, size, f"divide the model's {kv_heads} KV heads")
            per_rank = kv_heads // size
            kv = range(rank * per_rank, (rank + 1) * per_rank)
        else:
            _require(size % kv_heads == 0, size,
                     f"be a multiple of the model's {kv_heads} KV heads")  # fmt: skip
            shared = rank * kv_heads // size
            kv = range(shared, shared + 1)
        vocab_part = -(-shape.vocab_size // size)
        return cls(
            size=size,
            head_dim=shape.head_dim,
            heads=_part(heads, rank, size),
            kv_heads=kv,
            intermediate=_part(shape.intermediate_size, rank, size),
            vocab=range(rank * vocab_part, (rank + 1) * vocab_part),
            vocab_size=shape.vocab_size,
        )

    @property
    def num_heads(self) -> int:
        return len(self.heads)

    @property
    def num_kv_heads(self) -> int:
        return len(self.kv_heads)

    def rows_and_columns(self, name: str) -> tuple[slice, slice]:
        """The part of checkpoint tensor `name` this rank holds: (rows, columns) to read."""
        everything = slice(None)
        module, leaf = _module_and_leaf(name)
        if self.size == 1:
            return everything, everything
        if module in QUERY_ROWS:
            return self._rows_of_heads(self.heads), everything
        if module in KV_ROWS:
            return self._rows_of_heads(self.kv_heads), everything
        if module in MLP_ROWS:
            return _slice(self.intermediate), everything
        if module in QUERY_COLUMNS and leaf == "weight":
            return everything, self._rows_of_heads(self.heads)
        if module in MLP_COLUMNS and leaf == "weight":
            return everything, _slice(self.intermediate)
        if module in VOCAB_ROWS:  # rows past the vocabulary are padding: read up to its end
            return slice(self.vocab.start, min(self.vocab.stop, self.vocab_size)), everything
        return everything, everything

    def read(self, checkpoint: safe_open, name: str) -> torch.Tensor:
        """This rank's part of tensor `name` of an open safetensors file, reading only it."""
        rows, columns = self.rows_and_columns(name)
        if rows == columns == slice(None):
            return checkpoint.get_tensor(name)
        part = checkpoint.get_slice(name)
        shape = part.get_shape()
        if math.prod(shape) == 1:  # one scale for the whole tensor: every rank's
            return checkpoint.get_tensor(name)
        tensor = part[rows] if len(shape) == 1 else part[rows, columns]
        if _module_and_leaf(name)[0] in VOCAB_ROWS:  # the last rank's part, padded with zero rows
            tensor = torch.nn.functional.pad(tensor, (0, 0, 0, len(self.vocab) - len(tensor)))
        return tensor

    def _rows_of_heads(self, heads: range) -> slice:
        return slice(heads.start * self.head_dim, heads.stop * self.head_dim)


def _module_and_leaf(name: str) -> tuple[str, str]:
    """ "model.layers.0.self_attn.q_proj.weight" -> ("q_proj", "weight")."""
    module, _, leaf = name.rpartition(".")
    return module.rpartition(".")[2], leaf


def _part(total: int, rank: int, size: int) -> range:
    each = total // size
    return range(rank * each, (rank + 1) * each)


def _slice(part: range) -> slice:
    return slice(part.start, part.stop)


def _require(ok: bool, size: int, rule: str) -> None:
    if not ok:
        raise ModelLoadError(f"tensor_parallel_size {size} does not fit this model: it must {rule}")
