"""The build cache: entries that appear whole or not at all.

Each entry is built in a `.partial-` folder beside its place and renamed there when done, so an
interrupted build never looks cached. One build holds a cache at a time (a lock file), which
makes it safe to sweep the partial folders that an interrupted build left.
"""

from __future__ import annotations

import fcntl
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL = ".partial-"


@contextmanager
def holding(cache: Path) -> Iterator[None]:
    """Hold `cache` for one build: wait for any other build, then sweep what interrupted ones
    left."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for leftover in cache.glob(f"*/{PARTIAL}*"):
            shutil.rmtree(leftover)
        yield


def cached(entry: Path, build: Callable[[Path], object]) -> Path:
    """`entry`, built by `build(folder)` into an empty folder unless it is already there."""
    if not entry.is_dir():
        partial = entry.with_name(PARTIAL + entry.name)
        partial.mkdir(parents=True)
        try:
            build(partial)
        except BaseException:
            shutil.rmtree(partial)
            raise
        partial.rename(entry)
    return entry


def keep_only(entry: Path) -> None:
    """Drop the other entries of `entry`'s kind (older images run to gigabytes each)."""
    for other in entry.parent.iterdir():
        if other != entry and not other.name.startswith(PARTIAL):
            shutil.rmtree(other)
