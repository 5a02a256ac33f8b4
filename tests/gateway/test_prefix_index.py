"""The prefix index: chained block hashes, the longest prefix each worker holds, forgetting the
least recently used first."""

from __future__ import annotations

from pagoda_gateway.prefix_index import BLOCK_CHARS, MAX_BLOCKS, PrefixIndex, block_hashes

SYSTEM = "s" * (4 * BLOCK_CHARS)


def test_one_hash_per_whole_block_each_standing_for_the_whole_prefix():
    assert block_hashes("x" * (BLOCK_CHARS - 1)) == ()
    one, two = block_hashes("a" * BLOCK_CHARS), block_hashes("a" * 2 * BLOCK_CHARS + "tail")
    assert len(one) == 1 and len(two) == 2 and two[0] == one[0]
    # the same second block after a different first one is a different prefix
    assert block_hashes("b" * BLOCK_CHARS + "a" * BLOCK_CHARS)[1] != two[1]
    assert len(block_hashes("z" * BLOCK_CHARS * (MAX_BLOCKS + 5))) == MAX_BLOCKS


def test_the_longest_held_prefix_per_worker():
    index = PrefixIndex()
    conversation = block_hashes(SYSTEM + "u" * 2 * BLOCK_CHARS)
    index.remember(block_hashes(SYSTEM), "pod-a")
    index.remember(conversation, "pod-b")
    names = {"pod-a", "pod-b", "pod-c"}
    assert index.longest_matches(conversation, names) == {"pod-a": 4, "pod-b": 6}
    assert index.longest_matches(conversation, {"pod-a"}) == {"pod-a": 4}  # only those asked
    other = block_hashes("o" * 3 * BLOCK_CHARS)
    assert index.longest_matches(other, names) == {}


def test_the_least_recently_used_prefixes_are_forgotten_first():
    index = PrefixIndex(capacity=4)
    old, kept = block_hashes("o" * 2 * BLOCK_CHARS), block_hashes("k" * 2 * BLOCK_CHARS)
    index.remember(old, "pod-a")
    index.remember(kept, "pod-a")
    assert index.longest_matches(old, {"pod-a"}) == {"pod-a": 2}  # a lookup uses them again
    index.remember(block_hashes("n" * 2 * BLOCK_CHARS), "pod-b")
    assert len(index) == 4
    assert index.longest_matches(kept, {"pod-a"}) == {}
    assert index.longest_matches(old, {"pod-a"}) == {"pod-a": 2}
