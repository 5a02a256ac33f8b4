"""Which workers hold which prompt prefixes, as far as this gateway has seen.

A prompt's text is cut into blocks of BLOCK_CHARS characters, each hashed together with all the
blocks before it (as the workers' prefix cache chains its KV blocks), so one hash stands for a
whole prefix. Every request that a worker served adds its prompt's hashes under that worker;
a new request goes where the longest run of its hashes is held. Multi-turn chats follow their
history this way (each turn's prompt starts with the last one's), and prompts sharing a system
prompt follow it. The index forgets least recently used prefixes first, as the workers' caches
do; it is an estimate, and a wrong guess costs only a cache miss.
"""

from __future__ import annotations

from collections import OrderedDict

BLOCK_CHARS = 128  # about 32 tokens
MAX_BLOCKS = 512  # prompts are indexed up to 64k characters
CAPACITY = 65536  # prefixes remembered (a few million characters of prompts)


def block_hashes(text: str, block_chars: int = BLOCK_CHARS) -> tuple[int, ...]:
    """One hash per whole block, each covering the text up to that block's end. Python's own
    string hash: fast, and the index lives in one process (the hash ring does not use it)."""
    hashes, chained = [], 0
    end = min(len(text), block_chars * MAX_BLOCKS) // block_chars * block_chars
    for start in range(0, end, block_chars):
        chained = hash((chained, text[start : start + block_chars]))
        hashes.append(chained)
    return tuple(hashes)


class PrefixIndex:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._holders: OrderedDict[int, set[str]] = OrderedDict()

    def longest_matches(self, hashes: tuple[int, ...], names: set[str]) -> dict[str, int]:
        """For each of `names` holding a prefix of `hashes`: how many blocks it holds."""
        found: dict[str, int] = {}
        for depth, block in enumerate(hashes, start=1):
            holders = self._holders.get(block)
            if holders is None or not (held := holders & names):
                break
            self._holders.move_to_end(block)
            for name in held:
                found[name] = depth
        return found

    def remember(self, hashes: tuple[int, ...], name: str) -> None:
        for block in hashes:
            holders = self._holders.get(block)
            if holders is None:
                holders = self._holders[block] = set()
            holders.add(name)
            self._holders.move_to_end(block)
        while len(self._holders) > self.capacity:
            self._holders.popitem(last=False)

    def __len__(self) -> int:
        return len(self._holders)
