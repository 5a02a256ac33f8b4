"""Where an engine-loop pass goes: laps, garbage-collector pauses, CPU time against wall time."""

from __future__ import annotations

import gc
import os
import time

import torch
from pagoda_worker.engine.config import EngineConfig
from pagoda_worker.engine.llm_engine import LLMEngine
from pagoda_worker.engine.loop_timing import GcClock, Laps, PassMeter
from pagoda_worker.engine.startup import cpu_threads


def busy(seconds: float) -> None:
    """Use this much CPU time (however long the machine makes it take)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_laps_split_the_time_between_calls():
    laps = Laps()
    time.sleep(0.02)
    laps.lap("sleep")
    busy(0.01)
    laps.lap("busy")
    time.sleep(0.01)
    laps.lap("sleep")
    assert set(laps.parts) == {"sleep", "busy"}
    assert laps.parts["sleep"] >= 0.03 and laps.parts["busy"] >= 0.01


def test_the_gc_clock_times_collections_once_installed():
    clock = GcClock()
    gc.collect()
    assert clock.total_s == 0.0
    clock.install()
    try:
        garbage = [[] for _ in range(50_000)]
        for item in garbage:
            item.append(item)  # a cycle: only the collector frees it
        del garbage, item
        gc.collect()
    finally:
        clock.uninstall()
    assert clock.total_s > 0.0
    collected = clock.total_s
    gc.collect()
    assert clock.total_s == collected


def test_the_meter_keeps_the_slowest_pass_with_its_breakdown():
    clock = GcClock()
    meter = PassMeter(clock)
    clock.install()
    try:
        meter.start().lap("quick")
        meter.finish()
        laps = meter.start()
        busy(0.03)
        laps.lap("work")
        time.sleep(0.03)  # off the CPU: wall time, no CPU time
        laps.lap("wait")
        gc.collect()
        meter.finish()
        meter.start().lap("quick")
        meter.finish()
    finally:
        clock.uninstall()
    slowest = meter.slowest
    assert set(slowest.parts) == {"work", "wait"}
    assert slowest.wall_s >= 0.06
    assert 0.03 <= slowest.thread_cpu_s < slowest.wall_s - 0.02
    assert slowest.process_cpu_s >= slowest.thread_cpu_s * 0.9
    assert slowest.gc_s > 0.0
    assert meter.most_cpu_s == slowest.thread_cpu_s  # the busy pass was also the slowest
    assert "work" in slowest.describe() and "gc" in slowest.describe()


def test_an_engine_on_cpu_leaves_a_core_to_the_server(stories_dir):
    before = torch.get_num_threads()
    try:
        LLMEngine(EngineConfig(model=str(stories_dir), device="cpu", cpu_threads=1))
        assert torch.get_num_threads() == 1
        torch.set_num_threads(before + 1)
        LLMEngine(EngineConfig(model=str(stories_dir), device="cpu"))
        assert torch.get_num_threads() == cpu_threads(None)
    finally:
        torch.set_num_threads(before)
    assert cpu_threads(None) == max(len(os.sched_getaffinity(0)) - 1, 1)
    assert cpu_threads(3) == 3
    assert cpu_threads(None, ranks=64) == 1  # tensor-parallel ranks share the free cores
    assert cpu_threads(3, ranks=2) == 3
