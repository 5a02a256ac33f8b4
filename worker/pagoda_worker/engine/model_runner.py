"""Turns a scheduled step into tensors, runs the model over the paged KV cache, returns logits.

A step's inputs are built with numpy from the scheduled sequences (no per-token Python), packed
into one int32 buffer and sent to the device in one copy, through reused pinned memory on CUDA.
On CUDA, a step of decodes only replays a CUDA graph captured at start for the next larger batch
size of a ladder: padding rows write no KV (slot -1) and attend to nothing (length 0).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from itertools import chain

import numpy as np
import torch

from pagoda_worker.engine.scheduler import ScheduledSeq
from pagoda_worker.engine.sequence import UNREAD, Request, Sequence
from pagoda_worker.layers.attention import AttentionBackend, AttentionMetadata
from pagoda_worker.models.llama import LlamaForCausalLM
from pagoda_worker.parallel.group import TensorParallel

log = logging.getLogger(__name__)

PROMPT_ROWS_PER_CHUNK = 1024  # prompt tokens scored at once: bounds the vocab-wide logits
NOTHING = np.zeros(0, np.int32)


def _aligned(size: int) -> int:
    """Room for `size` int32s up to the next 16 bytes: each packed part starts aligned, as Triton
    compiles a variant per pointer alignment."""
    return -(-size // 4) * 4


@dataclass
class StepArrays:
    """What any tensor-parallel rank needs to run a step, on the host and picklable: int32 parts
    packed into one array (sent to the device in one copy), and the sizes around them."""

    packed: np.ndarray
    part_sizes: list[int]  # each part starts 16-byte aligned (_aligned)
    table_shape: tuple[int, int]
    max_query_len: int
    max_seq_len: int
    num_decodes: int
    num_sampled: int
    every_row_sampled: bool  # the logits rows are the step's first num_sampled rows
    graph_batch: int | None  # replay the decode graph of this batch size

    @classmethod
    def pack(
        cls,
        layout: StepLayout,
        token_rows: list[np.ndarray],
        logits_indices: np.ndarray,
        every_row_sampled: bool = False,
        graph_batch: int | None = None,
        unread_inputs: np.ndarray = NOTHING,
        unread_sources: np.ndarray = NOTHING,
        prompt_rows: np.ndarray = NOTHING,
    ) -> StepArrays:
        """token_rows: from `token_rows`; the other arrays as StepInputs describes them."""
        parts = [*token_rows, unread_inputs, unread_sources, logits_indices, prompt_rows,
                 layout.block_tables.ravel()]  # fmt: skip
        packed = np.zeros(sum(_aligned(part.size) for part in parts), np.int32)
        offset = 0
        for part in parts:
            packed[offset : offset + part.size] = part
            offset += _aligned(part.size)
        return cls(
            packed=packed,
            part_sizes=[part.size for part in parts],
            table_shape=layout.block_tables.shape,
            max_query_len=int(layout.query_lens.max()),
            max_seq_len=int(layout.seq_lens.max()),
            num_decodes=layout.num_decodes,
            num_sampled=logits_indices.size,
            every_row_sampled=every_row_sampled,
            graph_batch=graph_batch,
        )

    def views(self, on_device: torch.Tensor) -> list[torch.Tensor]:
        """Each part, as a view of the packed array on the device."""
        views, offset = [], 0
        for size in self.part_sizes:
            views.append(on_device[offset : offset + size])
            offset += _aligned(size)
        return views


@dataclass
class StepInputs:
    arrays: StepArrays  # what the tensors below were made from (sent to the other ranks)
    input_ids: torch.Tensor
    positions: torch.Tensor
    meta: AttentionMetadata
    logits_indices: torch.Tensor | None  # rows of the step whose logits are sampled; None = all
    # Input rows whose token is unread (unread_tokens.py), and that token's row in the previous
    # step's sampled ids; None when every input token is known.
    unread_inputs: torch.Tensor | None = None
    unread_sources: torch.Tensor | None = None
    # Prompt tokens to score (prompt_logprobs): the input rows whose logits predict them.
    prompt_rows: torch.Tensor | None = None
    # The driver's alone: the sequences behind the logits rows and the scored prompt rows.
    sampled: list[ScheduledSeq] = field(default_factory=list)  # in the order of the logits rows
    prompt_spans: list[PromptSpan] = field(default_factory=list)  # in the order of the rows

    @property
    def graph_batch(self) -> int | None:
        return self.arrays.graph_batch


@dataclass
class PromptSpan:
    """Prompt tokens [first, first + count) of a request are scored this step."""

    request: Request
    first: int
    count: int


@dataclass
class StepLayout:
    """Where a step's input tokens go, on the host: one row per token, sequence after sequence."""

    query_lens: np.ndarray  # [n] tokens each sequence computes this step
    starts: np.ndarray  # [n] tokens each sequence had computed before
    seq_lens: np.ndarray  # [n] each sequence's length once this step has run
    query_start_loc: np.ndarray  # [n + 1] each sequence's first row
    seq_of_token: np.ndarray  # [rows] the sequence of each row
    positions: np.ndarray  # [rows]
    block_tables: np.ndarray  # [n, widest] int32
    slots: np.ndarray  # [rows] the KV-cache slot each row writes

    @classmethod
    def of(
        cls, query_lens: np.ndarray, starts: np.ndarray, block_tables: np.ndarray, block_size: int
    ) -> StepLayout:
        n = len(query_lens)
        query_start_loc = np.zeros(n + 1, np.int32)
        np.cumsum(query_lens, out=query_start_loc[1:])
        seq_of_token = np.repeat(np.arange(n), query_lens)
        rows = np.arange(int(query_start_loc[-1]), dtype=np.int32)
        positions = rows - query_start_loc[seq_of_token] + starts[seq_of_token]
        blocks = block_tables[seq_of_token, positions // block_size]
        slots = blocks * block_size + positions % block_size
        return cls(
            query_lens=query_lens,
            starts=starts,
            seq_lens=starts + query_lens,
            query_start_loc=query_start_loc,
            seq_of_token=seq_of_token,
            positions=positions,
            block_tables=block_tables,
            slots=slots,
        )

    @property
    def num_tokens(self) -> int:
        return len(self.positions)

    @property
    def num_decodes(self) -> int:
        """How many leading sequences have one new token (the scheduler puts decodes first)."""
        single = self.query_lens == 1
        return len(single) if single.all() else int(single.argmin())


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


def token_rows(layout: StepLayout, token_ids: np.ndarray, batch: int | None) -> list[np.ndarray]:
    """The per-row inputs: for the eager forward as they are; for the decode graph of `batch` as
    its [4, batch] static rows, padded (padding writes no KV, slot -1)."""
    if batch is None:
        return [token_ids, layout.positions, layout.slots, layout.query_start_loc,
                layout.seq_lens]  # fmt: skip
    pad = batch - len(layout.seq_lens)
    rows = np.stack([
        np.pad(token_ids, (0, pad)),
        np.pad(layout.positions, (0, pad)),
        np.pad(layout.slots, (0, pad), constant_values=-1),
        np.pad(layout.seq_lens, (0, pad)),
    ])  # fmt: skip
    return [rows.ravel()]


def _input_token_ids(seqs: list[Sequence], layout: StepLayout) -> np.ndarray:
    """The token ids of every row: each sequence's tokens from its start to its new length."""
    spans = zip(seqs, layout.starts.tolist(), layout.seq_lens.tolist(), strict=True)
    tokens = chain.from_iterable(seq.token_ids[start:end] for seq, start, end in spans)
    return np.fromiter(tokens, np.int32, layout.num_tokens)


def _unread_inputs(
    seqs: list[Sequence],
    layout: StepLayout,
    token_ids: np.ndarray,
    unread_rows: Mapping[Sequence, int],
) -> tuple[np.ndarray, np.ndarray]:
    """The rows holding an unread token, and that token's row in the previous step's sampled
    ids (the sequence's row in `unread_rows`)."""
    inputs = np.flatnonzero(token_ids == UNREAD).astype(np.int32)
    of_seqs = layout.seq_of_token[inputs].tolist()
    sources = np.fromiter((unread_rows[seqs[i]] for i in of_seqs), np.int32, inputs.size)
    return inputs, sources


def _prompt_rows(seqs: list[Sequence], layout: StepLayout) -> tuple[np.ndarray, list[PromptSpan]]:
    """Rows whose logits score the next prompt token, for requests that want prompt logprobs
    (their first completion computes the prompt; the prefix cache is private to them)."""
    rows: list[range] = []
    spans: list[PromptSpan] = []
    for i, seq in enumerate(seqs):
        if seq.index or not seq.request.scores_prompt:
            continue
        start = int(layout.starts[i])
        end = min(int(layout.seq_lens[i]), seq.num_prompt_tokens - 1)
        if end > start:  # position q's logits predict token q + 1
            first_row = int(layout.query_start_loc[i])
            rows.append(range(first_row, first_row + end - start))
            spans.append(PromptSpan(seq.request, start + 1, end - start))
    return np.fromiter(chain.from_iterable(rows), np.int32), spans


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
        self.tp: TensorParallel = model.tp
        self.block_size, self.device = block_size, device
        self.max_num_seqs = max_num_seqs
        self.max_model_len = max_model_len or model.shape.max_position
        s, kv_heads = model.shape, model.shards.num_kv_heads  # this rank's
        shape = (2, num_blocks, block_size, kv_heads, s.head_dim)
        self.kv_caches = [
            torch.zeros(shape, dtype=kv_dtype, device=device) for _ in range(s.num_layers)
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

    def _captured_graphs(self) -> DecodeGraphs:
        assert self.graphs is not None, "a step gets a graph batch only once graphs are captured"
        return self.graphs

    def prepare(
        self, scheduled: list[ScheduledSeq], unread_rows: Mapping[Sequence, int]
    ) -> StepInputs:
        """unread_rows: for each sequence with an unread token among its inputs, that token's row
        in the previous step's sampled ids."""
        seqs = [item.seq for item in scheduled]
        layout = self._layout(scheduled)
        token_ids = _input_token_ids(seqs, layout)
        prompt_rows, prompt_spans = _prompt_rows(seqs, layout)
        unread_inputs, unread_sources = _unread_inputs(seqs, layout, token_ids, unread_rows)
        samples = np.fromiter((item.samples for item in scheduled), bool, len(scheduled))
        logits_indices = layout.query_start_loc[1:][samples] - 1
        batch = self._graph_batch(layout)
        arrays = StepArrays.pack(
            layout,
            token_rows(layout, token_ids, batch),
            logits_indices,
            # Every row one token, and every row sampled: the logits rows are the first n rows.
            every_row_sampled=layout.num_tokens == len(seqs) and bool(samples.all()),
            graph_batch=batch,
            unread_inputs=unread_inputs,
            unread_sources=unread_sources,
            prompt_rows=prompt_rows,
        )
        inputs = self.inputs_from(arrays)
        inputs.sampled = [item for item, keep in zip(scheduled, samples.tolist(), strict=True)
                          if keep]  # fmt: skip
        inputs.prompt_spans = prompt_spans
        return inputs

    def inputs_from(self, arrays: StepArrays) -> StepInputs:
        """The step's tensors on this rank's device (one copy), from the driver's arrays."""
        *rows, unread_inputs, unread_sources, indices, prompt_rows, tables = arrays.views(
            self.to_device.send(arrays.packed)
        )
        tables = tables.view(arrays.table_shape)
        ids, positions, meta = self._forward_inputs(arrays, rows, tables)
        has_unread = unread_inputs.numel() > 0
        return StepInputs(
            arrays=arrays,
            input_ids=ids,
            positions=positions,
            meta=meta,
            logits_indices=None if arrays.every_row_sampled else indices,
            unread_inputs=unread_inputs if has_unread else None,
            unread_sources=unread_sources if has_unread else None,
            prompt_rows=prompt_rows if prompt_rows.numel() else None,
        )

    def _layout(self, scheduled: list[ScheduledSeq]) -> StepLayout:
        n = len(scheduled)
        query_lens = np.fromiter((item.num_new_tokens for item in scheduled), np.int32, n)
        starts = np.fromiter((item.seq.num_computed_tokens for item in scheduled), np.int32, n)
        tables = block_table_array([item.seq.block_table for item in scheduled])
        return StepLayout.of(query_lens, starts, tables, self.block_size)

    def _graph_batch(self, layout: StepLayout) -> int | None:
        """The batch size of the decode graph that runs the step, if one can: decodes only."""
        num_seqs = len(layout.query_lens)
        if self.graphs is None or layout.num_decodes < num_seqs:
            return None
        return self.graphs.batch_for(num_seqs)

    def _forward_inputs(
        self, arrays: StepArrays, rows: list[torch.Tensor], tables: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata]:
        """The forward's token ids, positions and metadata, from `token_rows` on the device:
        as they are, or loaded into the decode graph's static inputs."""
        batch = arrays.graph_batch
        if batch is None:
            ids, positions, slots, query_start_loc, seq_lens = rows
            meta = AttentionMetadata(
                slot_mapping=slots,
                query_start_loc=query_start_loc,
                seq_lens=seq_lens,
                block_tables=tables,
                max_query_len=arrays.max_query_len,
                max_seq_len=arrays.max_seq_len,
                num_decodes=arrays.num_decodes,
            )
            return ids, positions, meta
        graphs = self._captured_graphs()
        graphs.load(batch, rows[0].view(4, batch), tables)
        return graphs.static[0, :batch], graphs.static[1, :batch], graphs.metas[batch]

    def forward(self, input_ids, positions, meta: AttentionMetadata) -> torch.Tensor:
        return self.model(input_ids, positions, self.kv_caches, meta, self.backend)

    @torch.inference_mode()
    def execute(
        self, inputs: StepInputs, unread_ids: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [num_sampled, vocab] for the sequences that sample this step, and the hidden
        states of every input row. unread_ids: the previous step's sampled ids, still on the
        device, where the unread input tokens are read from (the driver's; the other ranks get
        the tokens from it)."""
        if inputs.unread_inputs is not None:
            read = None
            if self.tp.is_driver:
                assert unread_ids is not None, "unread inputs need the step before's ids"
                read = unread_ids[inputs.unread_sources].to(inputs.input_ids.dtype)
            count, dtype = inputs.unread_inputs.numel(), inputs.input_ids.dtype
            inputs.input_ids[inputs.unread_inputs] = self.tp.broadcast(read, count, dtype,
                                                                       self.device)  # fmt: skip
        if inputs.graph_batch is not None:
            hidden = self._captured_graphs().replay(inputs.graph_batch)
        else:
            hidden = self.forward(inputs.input_ids, inputs.positions, inputs.meta)
        if inputs.logits_indices is not None:
            sampled = hidden[inputs.logits_indices]
        else:
            sampled = hidden[: inputs.arrays.num_sampled]
        return self.model.compute_logits(sampled), hidden

    @torch.inference_mode()
    def prompt_logits(self, inputs: StepInputs, hidden: torch.Tensor) -> Iterator[torch.Tensor]:
        """prompt_logprobs: the logits of the prompt rows, a chunk of rows at a time (they are
        vocabulary-wide)."""
        rows = inputs.prompt_rows
        if rows is None:
            return
        for at in range(0, rows.numel(), PROMPT_ROWS_PER_CHUNK):
            yield self.model.compute_logits(hidden[rows[at : at + PROMPT_ROWS_PER_CHUNK]])
