"""The backend pool (roles, exclusions, ejections, loads) and the hold queue in front of it."""

from __future__ import annotations

import asyncio

import pytest
from pagoda_gateway.backends import EJECT_S, Backend, BackendLoad, BackendPool
from pagoda_gateway.hold_queue import HoldQueue, HoldRefused

A1, A2 = Backend("active-1", "http://10.0.0.1:8000"), Backend("active-2", "http://10.0.0.2:8000")
S1 = Backend("standby-1", "http://10.0.1.1:8000")


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def names(found: tuple) -> tuple:
    role, backends = found
    return role, [b.name for b in backends]


def pool_of(clock=None) -> BackendPool:
    pool = BackendPool(clock) if clock else BackendPool()
    pool.set_ready("active", [A2, A1])
    pool.set_ready("standby", [S1])
    return pool


def test_the_active_role_comes_first_then_standby_then_nothing():
    pool = pool_of()
    assert names(pool.candidates()) == ("active", ["active-1", "active-2"])
    assert names(pool.candidates(exclude={"active-1"})) == ("active", ["active-2"])
    assert names(pool.candidates(exclude={"active-1", "active-2"})) == ("standby", ["standby-1"])
    pool.set_ready("active", [])
    assert names(pool.candidates()) == ("standby", ["standby-1"])
    pool.set_ready("standby", [])
    assert pool.candidates() == (None, [])


def test_an_ejected_backend_is_skipped_until_its_ejection_expires():
    clock = Clock()
    pool = pool_of(clock)
    pool.eject(A1)
    pool.eject(A2, seconds=2.0)
    assert names(pool.candidates()) == ("standby", ["standby-1"])
    assert pool.next_unejection_in() == pytest.approx(2.0)
    clock.now += 2.0
    assert names(pool.candidates()) == ("active", ["active-2"])
    assert pool.next_unejection_in() == pytest.approx(EJECT_S - 2.0)
    clock.now += EJECT_S - 2.0
    assert names(pool.candidates()) == ("active", ["active-1", "active-2"])
    assert pool.next_unejection_in() is None


def test_load_is_requests_in_flight_here_plus_those_waiting_there_plus_kv_usage():
    pool = pool_of()
    pool.loads["active-1"] = BackendLoad(waiting=3, kv_usage=0.9)
    pool.started(A1)
    pool.started(A1)
    assert pool.load(A1) == 5.9
    pool.finished(A1)
    pool.finished(A1)
    assert pool.load(A1) == 3.9
    assert pool.in_flight == {}
    assert pool.load(A2) == 0


def test_a_backend_that_leaves_takes_its_scraped_load_along():
    pool = pool_of()
    pool.loads = {"active-1": BackendLoad(waiting=2), "standby-1": BackendLoad(waiting=1)}
    pool.set_ready("active", [A2])
    assert set(pool.loads) == {"standby-1"}
    assert pool.all_ready() == [A2, S1]


async def test_a_request_is_released_as_soon_as_a_backend_becomes_ready():
    pool = BackendPool()
    hold = HoldQueue(pool, size=4, timeout_s=10)
    waiting = asyncio.create_task(hold.backends())
    await asyncio.sleep(0.05)
    assert hold.waiting == 1 and not waiting.done()
    loop = asyncio.get_running_loop()
    readied_at = loop.time()
    pool.set_ready("standby", [S1])
    assert names(await asyncio.wait_for(waiting, 1)) == ("standby", ["standby-1"])
    assert loop.time() - readied_at < 1.0  # not the 10 s timeout
    assert hold.waiting == 0


async def test_a_ready_backend_needs_no_wait():
    hold = HoldQueue(pool_of(), size=0, timeout_s=10)
    assert names(await hold.backends()) == ("active", ["active-1", "active-2"])


async def test_a_full_queue_refuses_at_once():
    hold = HoldQueue(BackendPool(), size=2, timeout_s=30)
    waiting = [asyncio.create_task(hold.backends()) for _ in range(2)]
    await asyncio.sleep(0.01)
    with pytest.raises(HoldRefused) as refused:
        await asyncio.wait_for(hold.backends(), 0.1)
    assert refused.value.retry_after_s == 30
    assert "2 requests already wait" in str(refused.value)
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert hold.waiting == 0  # a client that left gives its place back


async def test_a_request_waits_no_longer_than_the_timeout():
    hold = HoldQueue(BackendPool(), size=2, timeout_s=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(HoldRefused) as refused:
        await hold.backends()
    assert 0.19 <= loop.time() - started < 1.0
    assert str(refused.value) == "no worker became ready within 0.2 s"
    assert refused.value.retry_after_s == 1
    assert hold.waiting == 0


async def test_a_held_request_takes_a_backend_whose_ejection_ends():
    pool = BackendPool()
    pool.set_ready("active", [A1])
    pool.eject(A1, seconds=0.2)  # nothing changes in the ready set: the queue must look again
    hold = HoldQueue(pool, size=1, timeout_s=5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert names(await hold.backends()) == ("active", ["active-1"])
    assert 0.15 <= loop.time() - started < 1.0
