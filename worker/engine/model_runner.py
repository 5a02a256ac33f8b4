"""Turns a scheduled step into tensors, runs the model over the paged KV cache, returns logits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from worker.engine.scheduler import ScheduledSeq
from worker.layers.attention import AttentionBackend, AttentionMetadata
from worker.models.llama import LlamaForCausalLM


@dataclass
class StepInputs:
    input_ids: torch.Tensor
    positions: torch.Tensor
    meta: AttentionMetadata
    logits_indices: torch.Tensor  # rows of the step whose logits are sampled
    sampled: list[ScheduledSeq]  # in the order of logits_indices


def kv_cache_block_bytes(model: LlamaForCausalLM, block_size: int, dtype: torch.dtype) -> int:
    s = model.shape
    element = torch.tensor([], dtype=dtype).element_size()
    return 2 * s.num_layers * block_size * s.num_kv_heads * s.head_dim * element


class ModelRunner:
    def __init__(
        self,
        model: LlamaForCausalLM,
        backend: AttentionBackend,
        num_blocks: int,
        block_size: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.model, self.backend = model, backend
        self.block_size, self.device = block_size, device
        s = model.shape
        self.kv_caches = [
            torch.zeros(
                2, num_blocks, block_size, s.num_kv_heads, s.head_dim, dtype=dtype, device=device
            )
            for _ in range(s.num_layers)
        ]

    def prepare(self, scheduled: list[ScheduledSeq]) -> StepInputs:
        bs = self.block_size
        query_lens = np.array([s.num_new_tokens for s in scheduled], dtype=np.int64)
        starts = np.array([s.seq.num_computed_tokens for s in scheduled], dtype=np.int64)
        seq_lens = starts + query_lens
        token_ids = np.concatenate(
            [
                s.seq.token_ids[st:end]
                for s, st, end in zip(scheduled, starts, seq_lens, strict=True)
            ]
        )
        seq_of_token = np.repeat(np.arange(len(scheduled)), query_lens)
        query_start_loc = np.concatenate([[0], np.cumsum(query_lens)])
        positions = np.arange(len(token_ids)) - query_start_loc[seq_of_token] + starts[seq_of_token]

        max_blocks = max(len(s.seq.block_table) for s in scheduled)
        block_tables = np.zeros((len(scheduled), max_blocks), dtype=np.int32)
        for row, s in enumerate(scheduled):
            block_tables[row, : len(s.seq.block_table)] = s.seq.block_table
        slots = block_tables[seq_of_token, positions // bs].astype(np.int64) * bs + positions % bs

        sampled_rows = [i for i, s in enumerate(scheduled) if s.samples]
        logits_indices = query_start_loc[1:][sampled_rows] - 1
        num_decodes = sum(1 for s in scheduled if s.num_new_tokens == 1)

        def to_device(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
            return torch.from_numpy(a).to(self.device, dtype, non_blocking=True)

        meta = AttentionMetadata(
            slot_mapping=to_device(slots, torch.int64),
            query_start_loc=to_device(query_start_loc, torch.int32),
            seq_lens=to_device(seq_lens, torch.int32),
            block_tables=to_device(block_tables, torch.int32),
            max_query_len=int(query_lens.max()),
            max_seq_len=int(seq_lens.max()),
            num_decodes=num_decodes,
        )
        return StepInputs(
            input_ids=to_device(token_ids, torch.int64),
            positions=to_device(positions, torch.int64),
            meta=meta,
            logits_indices=to_device(logits_indices, torch.int64),
            sampled=[scheduled[i] for i in sampled_rows],
        )

    @torch.inference_mode()
    def execute(self, inputs: StepInputs) -> torch.Tensor:
        """Logits [num_sampled, vocab] for the sequences that sample this step."""
        hidden = self.model(
            inputs.input_ids, inputs.positions, self.kv_caches, inputs.meta, self.backend
        )
        return self.model.compute_logits(hidden[inputs.logits_indices])
