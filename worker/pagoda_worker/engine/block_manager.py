"""Paged KV-cache allocation: ref-counted blocks and a hash-chained prefix cache.

A full block is identified by a digest of its tokens chained to the digest of the block before it
(seeded with the request's cache salt), so a hit on block i implies the whole prefix matches.
Blocks are registered in the cache only once their KV has been computed. Freed blocks that hold
cached content stay reusable until the allocator needs them, least recently freed first.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from pagoda_worker.engine.sequence import Sequence


def block_digest(parent: bytes, token_ids: list[int]) -> bytes:
    return hashlib.sha256(parent + np.asarray(token_ids, dtype=np.int64).tobytes()).digest()


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    digest: bytes | None = None  # set while the block is registered in the prefix cache


class NoFreeBlocksError(RuntimeError):
    pass


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.block_size = block_size
        self.blocks = [Block(i) for i in range(num_blocks)]
        # Free blocks in eviction order: blocks without cached content first, then LRU cached ones.
        self.free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self.cached: dict[bytes, int] = {}  # digest -> block id
        self.prefix_queries = 0  # tokens looked up in the prefix cache
        self.prefix_hits = 0  # of which found

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free_blocks(self) -> int:
        return len(self.free)

    @property
    def usage(self) -> float:
        return 1.0 - self.num_free_blocks / self.num_blocks

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # -- prefix cache ---------------------------------------------------------------------

    def cached_prefix(self, seq: Sequence) -> list[int]:
        """Block ids holding the longest cached prefix of seq. The last token is always left to
        compute, because its logits are needed."""
        digests = self._prompt_digests(seq, (seq.num_tokens - 1) // self.block_size)
        hits = []
        for digest in digests:
            block_id = self.cached.get(digest)
            if block_id is None:
                break
            hits.append(block_id)
        return hits

    def _prompt_digests(self, seq: Sequence, num_full_blocks: int) -> list[bytes]:
        parent, digests = seq.request.cache_salt, []
        for i in range(num_full_blocks):
            start = i * self.block_size
            parent = block_digest(parent, seq.token_ids[start : start + self.block_size])
            digests.append(parent)
        return digests

    # -- allocation -----------------------------------------------------------------------

    def can_allocate(self, seq: Sequence, num_new_tokens: int, hits: list[int]) -> bool:
        """Whether a waiting seq can start with `hits` from the cache and `num_new_tokens` more."""
        reclaimed = sum(1 for b in hits if self.blocks[b].ref_count == 0)
        fresh = self.blocks_needed(len(hits) * self.block_size + num_new_tokens) - len(hits)
        return fresh <= self.num_free_blocks - reclaimed

    def allocate(self, seq: Sequence, num_new_tokens: int, hits: list[int]) -> None:
        assert not seq.block_table, "allocate() is for sequences that hold no blocks"
        for block_id in hits:
            self._take(block_id)
        seq.block_table = list(hits)
        num_cached = len(hits) * self.block_size
        seq.block_hashes = self._prompt_digests(seq, len(hits))
        seq.num_computed_tokens = num_cached
        seq.num_cached_tokens = seq.num_cached_tokens or num_cached  # as first admitted
        self.prefix_queries += seq.num_tokens
        self.prefix_hits += num_cached
        self.append_slots(seq, num_new_tokens)

    def can_append(self, seq: Sequence, num_new_tokens: int) -> bool:
        needed = self.blocks_needed(seq.num_computed_tokens + num_new_tokens) - len(seq.block_table)
        return needed <= self.num_free_blocks

    def append_slots(self, seq: Sequence, num_new_tokens: int) -> None:
        needed = self.blocks_needed(seq.num_computed_tokens + num_new_tokens)
        while len(seq.block_table) < needed:
            seq.block_table.append(self._take_free())

    def free_seq(self, seq: Sequence) -> None:
        # Reverse order: a sequence's tail is freed (and so evicted) before its shared head.
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free[block_id] = None
                if block.digest is None:
                    self.free.move_to_end(block_id, last=False)
        seq.block_table = []
        seq.block_hashes = []
        seq.num_computed_tokens = 0

    def commit(self, seq: Sequence) -> None:
        """Register seq's newly completed full blocks in the prefix cache (once their token ids
        are known: a block holding an unread token waits for a later commit)."""
        full = min(seq.num_computed_tokens, seq.num_read_tokens) // self.block_size
        parent = seq.block_hashes[-1] if seq.block_hashes else seq.request.cache_salt
        for i in range(len(seq.block_hashes), full):
            start = i * self.block_size
            parent = block_digest(parent, seq.token_ids[start : start + self.block_size])
            seq.block_hashes.append(parent)
            block = self.blocks[seq.block_table[i]]
            if block.digest is None and parent not in self.cached:
                block.digest = parent
                self.cached[parent] = block.block_id

    def _take(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.ref_count == 0:
            del self.free[block_id]
        block.ref_count += 1

    def _take_free(self) -> int:
        if not self.free:
            raise NoFreeBlocksError("KV cache exhausted")
        block_id, _ = self.free.popitem(last=False)
        block = self.blocks[block_id]
        if block.digest is not None:  # evict its cached content
            del self.cached[block.digest]
            block.digest = None
        block.ref_count = 1
        return block_id
