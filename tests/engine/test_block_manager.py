"""Block-manager invariants under random workloads (hypothesis), and prefix-cache behaviour."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st
from pagoda_worker.engine.block_manager import BlockManager
from pagoda_worker.engine.sampling_params import SamplingParams
from pagoda_worker.engine.sequence import Request, Sequence

BLOCK = 4


def make_seq(tokens: list[int], salt: bytes = b"") -> Sequence:
    request = Request("r", tokens, SamplingParams(), salt)
    seq = Sequence(request, 0, list(tokens), None)
    request.seqs.append(seq)
    return seq


def check_invariants(bm: BlockManager, live: list[Sequence]) -> None:
    owners = Counter(b for seq in live for b in seq.block_table)
    for block in bm.blocks:
        assert block.ref_count == owners.get(block.block_id, 0), "ref count != number of owners"
        assert (block.ref_count == 0) == (block.block_id in bm.free), "free list out of sync"
    for seq in live:
        assert len(set(seq.block_table)) == len(seq.block_table), "a sequence owns a block twice"
    assert bm.num_free_blocks + len(owners) == bm.num_blocks, "free + used != total"
    for digest, block_id in bm.cached.items():
        assert bm.blocks[block_id].digest == digest


def admit(bm: BlockManager, seq: Sequence) -> bool:
    hits = bm.cached_prefix(seq)
    num_new = seq.num_tokens - len(hits) * BLOCK
    if not bm.can_allocate(seq, num_new, hits):
        return False
    bm.allocate(seq, num_new, hits)
    seq.num_computed_tokens = seq.num_tokens
    bm.commit(seq)
    return True


ops = st.lists(
    st.tuples(
        st.sampled_from(["add", "grow", "free"]),
        st.lists(
            st.integers(0, 3), min_size=1, max_size=14
        ),  # small alphabet: many shared prefixes
        st.integers(0, 50),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_invariants_hold_under_random_workloads(operations):
    bm = BlockManager(num_blocks=12, block_size=BLOCK)
    live: list[Sequence] = []
    for op, tokens, pick in operations:
        if op == "add":
            seq = make_seq(tokens)
            if admit(bm, seq):
                live.append(seq)
        elif op == "grow" and live:
            seq = live[pick % len(live)]
            if bm.can_append(seq, 1):
                seq.token_ids.append(tokens[0])
                bm.append_slots(seq, 1)
                seq.num_computed_tokens += 1
                bm.commit(seq)
        elif op == "free" and live:
            bm.free_seq(live.pop(pick % len(live)))
        check_invariants(bm, live)
    for seq in live:
        bm.free_seq(seq)
    check_invariants(bm, [])
    assert bm.num_free_blocks == bm.num_blocks


def test_shared_prefix_reuses_full_blocks_only():
    bm = BlockManager(num_blocks=8, block_size=BLOCK)
    first = make_seq(list(range(10)))
    assert admit(bm, first)
    second = make_seq([*range(9), 99])
    hits = bm.cached_prefix(second)
    assert hits == first.block_table[:2]  # two full blocks match; the third block is partial


def test_cache_hit_leaves_last_token_to_compute():
    bm = BlockManager(num_blocks=8, block_size=BLOCK)
    assert admit(bm, make_seq(list(range(8))))
    assert len(bm.cached_prefix(make_seq(list(range(8))))) == 1  # not 2: logits need the last


def test_freed_cached_blocks_are_reused_until_evicted():
    bm = BlockManager(num_blocks=4, block_size=BLOCK)
    first = make_seq(list(range(9)))
    assert admit(bm, first)
    kept = first.block_table[:2]
    bm.free_seq(first)
    assert bm.cached_prefix(make_seq(list(range(9)))) == kept
    # Fill the cache with other content: the cached blocks are evicted, least recent first.
    other = make_seq([7] * 16)
    assert admit(bm, other)
    assert bm.cached_prefix(make_seq(list(range(9)))) == []


def test_salt_isolates_prefix_caches():
    bm = BlockManager(num_blocks=8, block_size=BLOCK)
    assert admit(bm, make_seq(list(range(9)), salt=b"tenant-a"))
    assert bm.cached_prefix(make_seq(list(range(9)), salt=b"tenant-b")) == []
    assert len(bm.cached_prefix(make_seq(list(range(9)), salt=b"tenant-a"))) == 2
