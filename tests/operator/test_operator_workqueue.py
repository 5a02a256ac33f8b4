"""The work queue: one entry per key, one worker per key, changes during work not lost."""

from __future__ import annotations

import asyncio

from pagoda_operator.workqueue import WorkQueue


async def test_a_key_is_queued_once():
    queue = WorkQueue()
    for _ in range(3):
        queue.add("a")
    queue.add("b")
    assert len(queue) == 2
    assert [await queue.get(), await queue.get()] == ["a", "b"]


async def test_a_key_added_while_worked_on_comes_back_after_done():
    queue = WorkQueue()
    queue.add("a")
    key = await queue.get()
    queue.add("a")
    assert len(queue) == 0, "never handed to a second worker while the first works on it"
    queue.done(key)
    assert len(queue) == 1
    assert await queue.get() == "a"


async def test_delayed_add_fires_later_and_the_earliest_delay_wins():
    queue = WorkQueue()
    queue.add("a", delay=0.2)
    queue.add("a", delay=5.0)  # later: ignored, 0.2 s is already pending
    assert len(queue) == 0
    assert await asyncio.wait_for(queue.get(), timeout=1.0) == "a"


async def test_an_earlier_delay_replaces_a_later_one():
    queue = WorkQueue()
    queue.add("a", delay=5.0)
    queue.add("a", delay=0.05)
    assert await asyncio.wait_for(queue.get(), timeout=1.0) == "a"
