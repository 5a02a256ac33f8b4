"""Backend choice and the runner's host-side helpers: these run everywhere, GPU or not."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from pagoda_worker.engine.model_runner import (
    StepArrays,
    StepLayout,
    block_table_array,
    graph_batch_sizes,
    token_rows,
)
from pagoda_worker.layers.attention import ReferenceAttention
from pagoda_worker.layers.backends import select_attention_backend


def test_auto_is_the_reference_on_cpu():
    assert isinstance(select_attention_backend("auto", torch.device("cpu")), ReferenceAttention)
    assert isinstance(
        select_attention_backend("reference", torch.device("cpu")), ReferenceAttention
    )


def test_triton_on_cpu_is_a_clear_error():
    with pytest.raises(ValueError, match=r"'triton' needs a CUDA device.*reference"):
        select_attention_backend("triton", torch.device("cpu"))


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match="'flash' is unknown"):
        select_attention_backend("flash", torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_auto_is_triton_on_cuda():
    backend = select_attention_backend("auto", torch.device("cuda"))
    assert type(backend).__name__ == "TritonAttention" and backend.graph_safe


def test_graph_ladder_covers_every_batch_up_to_the_limit():
    assert graph_batch_sizes(1) == [1]
    assert graph_batch_sizes(12) == [1, 2, 4, 8, 12]
    ladder = graph_batch_sizes(256)
    assert ladder[:6] == [1, 2, 4, 8, 16, 32] and ladder[-1] == 256
    assert all(b - a <= 16 for a, b in itertools.pairwise(ladder))


def test_block_table_array_pads_ragged_tables():
    array = block_table_array([[4, 7], [], [1, 2, 3]])
    assert array.dtype == np.int32
    assert array.tolist() == [[4, 7, 0], [0, 0, 0], [1, 2, 3]]


def test_step_layout_places_each_token_in_its_sequence_block_and_slot():
    """A decode at position 4 (its second block, 2) and a 3-token prefill (block 5), blocks of
    4 tokens: the layout that both the step and the KV-cache sizing's measured step use."""
    layout = StepLayout.of(
        query_lens=np.array([1, 3], np.int32),
        starts=np.array([4, 0], np.int32),
        block_tables=np.array([[7, 2], [5, 0]], np.int32),
        block_size=4,
    )
    assert layout.query_start_loc.tolist() == [0, 1, 4]
    assert layout.seq_lens.tolist() == [5, 3]
    assert layout.seq_of_token.tolist() == [0, 1, 1, 1]
    assert layout.positions.tolist() == [4, 0, 1, 2]
    assert layout.slots.tolist() == [2 * 4 + 0, 5 * 4 + 0, 5 * 4 + 1, 5 * 4 + 2]
    assert (layout.num_tokens, layout.num_decodes) == (4, 1)


def test_step_arrays_pack_every_part_aligned_and_give_it_back():
    """What the other tensor-parallel ranks receive: the parts of one int32 array, each starting
    16-byte aligned, and the sizes the attention metadata needs."""
    layout = StepLayout.of(
        query_lens=np.array([1, 3], np.int32),
        starts=np.array([4, 0], np.int32),
        block_tables=np.array([[7, 2], [5, 0]], np.int32),
        block_size=4,
    )
    ids = np.array([11, 12, 13, 14], np.int32)
    arrays = StepArrays.pack(
        layout, token_rows(layout, ids, None), np.array([0, 3], np.int32),
        prompt_rows=np.array([1, 2], np.int32),
    )  # fmt: skip
    assert (arrays.max_query_len, arrays.max_seq_len, arrays.num_decodes) == (3, 5, 1)
    assert (arrays.num_sampled, arrays.table_shape) == (2, (2, 2))
    parts = arrays.views(torch.from_numpy(arrays.packed))
    tokens, positions, slots, starts, seq_lens, unread, sources, logits, prompt, tables = parts
    assert tokens.tolist() == [11, 12, 13, 14] and positions.tolist() == [4, 0, 1, 2]
    assert slots.tolist() == layout.slots.tolist() and starts.tolist() == [0, 1, 4]
    assert seq_lens.tolist() == [5, 3] and unread.numel() == sources.numel() == 0
    assert logits.tolist() == [0, 3] and prompt.tolist() == [1, 2]
    assert tables.tolist() == [7, 2, 5, 0]
    assert all(part.data_ptr() % 16 == 0 for part in parts if part.numel())
