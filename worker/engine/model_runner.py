"""Turns a scheduled step into tensors, runs the model over the paged KV cache, returns logits.

A step's inputs are built with numpy from the scheduled sequences (no per-token Python), packed
into one int32 buffer and sent to the device in one copy, through reused pinned memory on CUDA.
On CUDA, a step of decodes only replays a CUDA graph captured at start for the next larger batch
size of a ladder: padding rows write no KV (slot -1) and attend to nothing (length 0).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import chain

import numpy as np
import torch

from worker.engine.scheduler import ScheduledSeq
from worker.engine.sequence import Request, Sequence
from worker.layers.attention import AttentionBackend, AttentionMetadata
from worker.models.llama import LlamaForCausalLM

log = logging.getLogger(__name__)


@dataclass
class StepInputs:
    input_ids: torch.Tensor
    positions: torch.Tensor
    meta: AttentionMetadata
    logits_indices: torch.Tensor | None  # rows of the step whose logits are sampled; None = all
    sampled: list[ScheduledSeq]  # in the order of the logits rows
    # Input rows whose token is still on the device, and that token's row in the previous
    # step's sampled ids (async scheduling); None when every input token is known.
    fill_rows: torch.Tensor | None = None
    fill_from: torch.Tensor | None = None
    graph_batch: int | None = None  # replay the decode graph of this batch size
    # Prompt tokens to score (prompt_logprobs): the input rows whose logits predict them.
    prompt_rows: torch.Tensor | None = None
    prompt_spans: list[PromptSpan] = field(default_factory=list)  # in the order of the rows


@dataclass
class PromptSpan:
    """Prompt tokens [first, first + count) of a request are scored this step."""

    request: Request
    first: int
    count: int


def kv_cache_block_bytes(model: LlamaForCausalLM, block_size: int, kv_dtype: torch.dtype) -> int:
    s = model.shape
    element = torch.tensor([], dtype=kv_dtype).element_size()
    return 2 * s.num_layers * block_size * s.num_kv_heads * s.head_dim * element


def graph_batch_sizes(max_num_seqs: int) -> list[int]:
    """1, 2, 4, 8, then every multiple of 16, up to max_num_seqs (always included)."""
    ladder = [b for b in (1, 2, 4, 8) if b < max_num_seqs]
    ladder += list(range(16, max_num_seqs, 16))
    return [*ladder, max_num_seqs]


def block_table_array(tables: list[list[int]]) -> np.ndarray:
    """Ragged block lists -> [B, longest] int32, zero-padded, without a loop over rows."""
    lengths = np.fromiter(map(len, tables), np.int64, len(tables))
    array = np.zeros((len(tables), max(int(lengths.max()), 1)), np.int32)
    flat = np.fromiter(chain.from_iterable(tables), np.int32, int(lengths.sum()))
    array[np.arange(array.shape[1]) < lengths[:, None]] = flat
    return array


class HostToDevice:
    """Sends one int32 array per step in one copy. On CUDA it goes through a pinned buffer that is
    reused once the previous copy out of it has finished."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.pinned: torch.Tensor | None = None
        self.copied: torch.cuda.Event | None = None

    def send(self, array: np.ndarray) -> torch.Tensor:
        if self.device.type != "cuda":
            return torch.from_numpy(array)
        if self.copied is not None:
            self.copied.synchronize()
        if self.pinned is None or self.pinned.numel() < array.size:
            self.pinned = torch.empty(2 * array.size, dtype=torch.int32, pin_memory=True)
        staged = self.pinned[: array.size]
        staged.numpy()[:] = array
        on_device = staged.to(self.device, non_blocking=True)
        self.copied = torch.cuda.Event()
        self.copied.record()
        return on_device


class DecodeGraphs:
    """CUDA graphs of the model's forward for decode batches, sharing one memory pool.

    Inputs live in static buffers: rows (token id, position, slot, sequence length) of a [4, max]
    int32 tensor, and a [max, max_blocks] block table."""

    def __init__(self, runner: ModelRunner, max_num_seqs: int, max_blocks: int) -> None:
        device = runner.device
        self.static = torch.zeros(4, max_num_seqs, dtype=torch.int32, device=device)
        self.static[2] = -1  # padding rows write nowhere
        self.block_tables = torch.zeros(max_num_seqs, max_blocks, dtype=torch.int32, device=device)
        self.query_start_loc = torch.arange(max_num_seqs + 1, dtype=torch.int32, device=device)
        self.sizes = graph_batch_sizes(max_num_seqs)
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.metas: dict[int, AttentionMetadata] = {}
        self.max_seq_len = max_blocks * runner.block_size

    def meta(self, batch: int) -> AttentionMetadata:
        return AttentionMetadata(
            slot_mapping=self.static[2, :batch],
            query_start_loc=self.query_start_loc[: batch + 1],
            seq_lens=self.static[3, :batch],
            block_tables=self.block_tables[:batch],
            max_query_len=1,
            max_seq_len=self.max_seq_len,
            num_decodes=batch,
        )

    @torch.inference_mode()
    def capture(self, runner: ModelRunner) -> None:
        pool = torch.cuda.graph_pool_handle()
        for batch in reversed(self.sizes):  # largest first: smaller ones reuse its memory
            meta = self.meta(batch)
            ids, positions = self.static[0, :batch], self.static[1, :batch]
            runner.forward(ids, positions, meta)  # warm-up: compiles this size's kernels
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                hidden = runner.forward(ids, positions, meta)
            self.graphs[batch], self.metas[batch] = (graph, hidden), meta
        for graph, _ in self.graphs.values():  # the first launch uploads the graph: not mid-run
            graph.replay()
        torch.cuda.synchronize()

    def batch_for(self, num_seqs: int) -> int | None:
        return next((b for b in self.sizes if b >= num_seqs), None)

    def load(self, batch: int, rows: torch.Tensor, tables: torch.Tensor) -> None:
        """rows: [4, batch] padded inputs; tables: [num_seqs, width] block tables."""
        self.static[:, :batch].copy_(rows)
        self.block_tables[: tables.shape[0], : tables.shape[1]].copy_(tables)

    def replay(self, batch: int) -> torch.Tensor:
        graph, hidden = self.graphs[batch]
        graph.replay()
        return hidden


class ModelRunner:
    def __init__(
        self,
        model: LlamaForCausalLM,
        backend: AttentionBackend,
        num_blocks: int,
        block_size: int,
        device: torch.device,
        kv_dtype: torch.dtype,
        max_num_seqs: int = 256,
        max_model_len: int | None = None,
    ) -> None:
        self.model, self.backend = model, backend
        self.block_size, self.device = block_size, device
        self.max_num_seqs = max_num_seqs
        self.max_model_len = max_model_len or model.shape.max_position
        s = model.shape
        self.kv_caches = [
            torch.zeros(
                2, num_blocks, block_size, s.num_kv_heads, s.head_dim, dtype=kv_dtype, device=device
            )
            for _ in range(s.num_layers)
        ]
        self.to_device = HostToDevice(device)
        self.graphs: DecodeGraphs | None = None

    def capture_decode_graphs(self) -> None:
        """Capture the decode ladder (CUDA with a graph-safe backend only; else a no-op)."""
        if self.device.type != "cuda" or not self.backend.graph_safe:
            return
        max_blocks = -(-self.max_model_len // self.block_size)
        graphs = DecodeGraphs(self, self.max_num_seqs, max_blocks)
        graphs.capture(self)
        self.graphs = graphs
        log.info("captured CUDA graphs for decode batches %s", graphs.sizes)

    def prepare(
        self, scheduled: list[ScheduledSeq], pending_rows: Mapping[Sequence, int]
    ) -> StepInputs:
        """pending_rows: for each sequence with a placeholder among its input tokens, the row of
        that token in the previous step's sampled ids."""
        bs, n = self.block_size, len(scheduled)
        seqs = [s.seq for s in scheduled]
        query_lens = np.fromiter((s.num_new_tokens for s in scheduled), np.int32, n)
        starts = np.fromiter((seq.num_computed_tokens for seq in seqs), np.int32, n)
        seq_lens = starts + query_lens
        num_tokens = int(query_lens.sum())
        token_ids = np.fromiter(
            chain.from_iterable(
                seq.token_ids[st:end]
                for seq, st, end in zip(seqs, starts.tolist(), seq_lens.tolist(), strict=True)
            ),
            np.int32,
            num_tokens,
        )
        query_start_loc = np.zeros(n + 1, np.int32)
        np.cumsum(query_lens, out=query_start_loc[1:])
        seq_of_token = np.repeat(np.arange(n), query_lens)
        first_token = query_start_loc[seq_of_token]
        positions = np.arange(num_tokens, dtype=np.int32) - first_token + starts[seq_of_token]
        block_tables = block_table_array([seq.block_table for seq in seqs])
        slots = block_tables[seq_of_token, positions // bs] * bs + positions % bs

        prompt_rows, prompt_spans = self._prompt_rows(seqs, starts, seq_lens, query_start_loc)
        fill_rows = np.flatnonzero(token_ids < 0).astype(np.int32)
        fill_from = np.fromiter(
            (pending_rows[seqs[i]] for i in seq_of_token[fill_rows].tolist()),
            np.int32,
            fill_rows.size,
        )
        samples = np.fromiter((s.samples for s in scheduled), bool, n)
        sampled = [s for s, keep in zip(scheduled, samples.tolist(), strict=True) if keep]
        logits_indices = query_start_loc[1:][samples] - 1
        single = query_lens == 1
        num_decodes = n if single.all() else int(single.argmin())
        batch = self.graphs.batch_for(n) if self.graphs and num_decodes == n else None

        if batch is not None:
            pad = batch - n
            rows = np.stack([
                np.pad(token_ids, (0, pad)),
                np.pad(positions, (0, pad)),
                np.pad(slots, (0, pad), constant_values=-1),
                np.pad(seq_lens, (0, pad)),
            ])  # fmt: skip
            parts = [rows.ravel()]
        else:
            parts = [token_ids, positions, slots, query_start_loc, seq_lens]
        parts += [fill_rows, fill_from, logits_indices, block_tables.ravel()]
        # Each part starts 16-byte aligned: Triton compiles a variant per pointer alignment.
        padded = [-(-p.size // 4) * 4 for p in parts]
        packed_host = np.zeros(sum(padded), np.int32)
        offsets = np.concatenate([[0], np.cumsum(padded)])
        for part, offset in zip(parts, offsets.tolist(), strict=False):
            packed_host[offset : offset + part.size] = part
        packed = self.to_device.send(packed_host)
        views = [packed[o : o + p.size] for p, o in zip(parts, offsets.tolist(), strict=False)]
        tables = views[-1].view(block_tables.shape)
        # Every row one token, and every row sampled: the logits rows are the first n rows.
        indices = None if num_tokens == n and samples.all() else views[-2]
        fills = (views[-4], views[-3]) if fill_rows.size else (None, None)

        if batch is not None:
            self.graphs.load(batch, views[0].view(4, batch), tables)
            meta = self.graphs.metas[batch]
            ids, pos = self.graphs.static[0, :batch], self.graphs.static[1, :batch]
            return StepInputs(
                ids, pos, meta, indices, sampled, *fills, batch, prompt_rows, prompt_spans
            )
        ids, pos, slot_view, qsl, lens = views[:5]
        meta = AttentionMetadata(
            slot_mapping=slot_view,
            query_start_loc=qsl,
            seq_lens=lens,
            block_tables=tables,
            max_query_len=int(query_lens.max()),
            max_seq_len=int(seq_lens.max()),
            num_decodes=num_decodes,
        )
        return StepInputs(ids, pos, meta, indices, sampled, *fills, None, prompt_rows, prompt_spans)

    def _prompt_rows(
        self, seqs: list[Sequence], starts: np.ndarray, seq_lens: np.ndarray, row_starts: np.ndarray
    ) -> tuple[torch.Tensor | None, list[PromptSpan]]:
        """Rows whose logits score the next prompt token, for requests that want prompt logprobs
        (their first completion computes the prompt; the prefix cache is private to them)."""
        rows, spans = [], []
        for i, seq in enumerate(seqs):
            if seq.index or not seq.request.scores_prompt:
                continue
            start, end = int(starts[i]), min(int(seq_lens[i]), seq.num_prompt_tokens - 1)
            if end > start:  # position q's logits predict token q + 1
                rows.extend(range(int(row_starts[i]), int(row_starts[i]) + end - start))
                spans.append(PromptSpan(seq.request, start + 1, end - start))
        if not rows:
            return None, []
        return torch.tensor(rows, dtype=torch.int64).to(self.device), spans

    def forward(self, input_ids, positions, meta: AttentionMetadata) -> torch.Tensor:
        return self.model(input_ids, positions, self.kv_caches, meta, self.backend)

    @torch.inference_mode()
    def execute(
        self, inputs: StepInputs, previous_ids: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [num_sampled, vocab] for the sequences that sample this step, and the hidden
        states of every input row. previous_ids: the previous step's sampled ids, still on the
        device, that fill the placeholders."""
        if inputs.fill_rows is not None:
            filled = previous_ids[inputs.fill_from].to(inputs.input_ids.dtype)
            inputs.input_ids[inputs.fill_rows] = filled
        if inputs.graph_batch is not None:
            hidden = self.graphs.replay(inputs.graph_batch)
        else:
            hidden = self.forward(inputs.input_ids, inputs.positions, inputs.meta)
        if inputs.logits_indices is not None:
            sampled = hidden[inputs.logits_indices]
        else:
            sampled = hidden[: len(inputs.sampled)]
        return self.model.compute_logits(sampled), hidden


@torch.inference_mode()
def profile_activation_bytes(
    model: LlamaForCausalLM,
    backend: AttentionBackend,
    block_size: int,
    kv_dtype: torch.dtype,
    device: torch.device,
    max_num_batched_tokens: int,
    max_num_seqs: int,
    max_model_len: int,
) -> int:
    """Memory, beyond what is allocated now, that running takes besides the KV cache, measured on
    CUDA: the peak of the largest step (a prefill of max_num_batched_tokens with logits for
    max_num_seqs rows, upcast as the sampler does), plus what the decode CUDA graphs keep."""
    tokens = max_num_batched_tokens
    seq_len = min(tokens, max_model_len)
    lengths = [seq_len] * (tokens // seq_len) + ([tokens % seq_len] if tokens % seq_len else [])
    num_blocks = -(-seq_len // block_size) * len(lengths)
    runner = ModelRunner(model, backend, num_blocks, block_size, device, kv_dtype)
    prefill = _step_peak_bytes(runner, lengths, lengths, min(max_num_seqs, tokens))
    torch.cuda.empty_cache()  # later steps find no cached blocks either: measure fresh segments
    if backend.graph_safe:
        decode = _decode_graph_bytes(runner, max_num_seqs, max_model_len)
    else:
        decode = _step_peak_bytes(runner, [1] * max_num_seqs, [1] * max_num_seqs, 0)
    del runner
    torch.cuda.empty_cache()
    return prefill + decode


def _decode_graph_bytes(runner: ModelRunner, max_num_seqs: int, max_model_len: int) -> int:
    """What capturing the decode ladder takes: the eager warm-ups, the graphs' private pool (with
    the capture stream's cuBLAS workspace and each graph's own segments), the static inputs."""
    torch.cuda.synchronize(runner.device)
    before = torch.cuda.memory_reserved(runner.device)
    max_blocks = -(-max_model_len // runner.block_size)
    graphs = DecodeGraphs(runner, max_num_seqs, max_blocks)
    graphs.capture(runner)
    used = torch.cuda.memory_reserved(runner.device) - before
    del graphs
    return used


def _step_peak_bytes(
    runner: ModelRunner, query_lens: list[int], context_lens: list[int], num_logits: int
) -> int:
    """Run one step of these sequences (blocks assigned round-robin over the runner's cache)."""
    device, bs = runner.device, runner.block_size
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    n = len(query_lens)
    starts = np.array(context_lens) - np.array(query_lens)
    seq_of_token = np.repeat(np.arange(n), query_lens)
    qsl = np.concatenate([[0], np.cumsum(query_lens)])
    positions = np.arange(len(seq_of_token)) - qsl[seq_of_token] + starts[seq_of_token]
    width = -(-max(context_lens) // bs)
    tables = np.arange(n * width).reshape(n, width) % runner.kv_caches[0].shape[1]
    slots = tables[seq_of_token, positions // bs] * bs + positions % bs

    def on_device(a) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a), dtype=torch.int32, device=device)

    meta = AttentionMetadata(
        slot_mapping=on_device(slots),
        query_start_loc=on_device(qsl),
        seq_lens=on_device(context_lens),
        block_tables=on_device(tables),
        max_query_len=max(query_lens),
        max_seq_len=max(context_lens),
        num_decodes=n if max(query_lens) == 1 else 0,
    )
    ids = torch.randint(0, runner.model.shape.vocab_size, (len(positions),), device=device)
    hidden = runner.forward(ids, on_device(positions), meta)
    logits = runner.model.compute_logits(hidden[:num_logits]).float()
    torch.softmax(logits, dim=-1)
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before
