"""Where an engine-loop pass spends its time, so the slowest one can be explained.

A pass is: apply queued commands, then one engine step, then the report to the front end. Its
wall time is split into named laps (commands, schedule, launch, resolve, outputs, hand-over).
Garbage-collector pauses during the pass are timed through `gc.callbacks`. The loop thread's
CPU time and the whole engine process's CPU time over the pass tell a slow pass apart: thread
CPU close to wall is our own work; process CPU close to wall but thread CPU far below is other
threads of the process (torch's); both far below wall is other processes having the CPU.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field


class Laps:
    """Splits a stretch of wall time into named parts, measured between calls to lap()."""

    def __init__(self) -> None:
        self.started = self._mark = time.perf_counter()
        self.parts: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.parts[name] = self.parts.get(name, 0.0) + now - self._mark
        self._mark = now


class GcClock:
    """Total seconds spent in garbage collection since install(), by any thread."""

    def __init__(self) -> None:
        self.total_s = 0.0
        self._started = 0.0

    def install(self) -> None:
        gc.callbacks.append(self._on_gc)

    def uninstall(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.total_s += time.perf_counter() - self._started


@dataclass
class PassTiming:
    wall_s: float = 0.0
    parts: dict[str, float] = field(default_factory=dict)  # laps; gc overlaps them
    gc_s: float = 0.0
    thread_cpu_s: float = 0.0  # the engine thread's own CPU time
    process_cpu_s: float = 0.0  # every thread of the process

    def describe(self) -> str:
        parts = ", ".join(f"{name} {s * 1000:.1f}" for name, s in self.parts.items())
        return (
            f"{self.wall_s * 1000:.1f} ms ({parts}; gc {self.gc_s * 1000:.1f}; CPU: engine thread "
            f"{self.thread_cpu_s * 1000:.1f}, process {self.process_cpu_s * 1000:.1f})"
        )


class PassMeter:
    """Measures one pass at a time; keeps the slowest, and the most CPU any pass used itself
    (what the slowest pass would have taken with a core and the GIL to itself)."""

    def __init__(self, gc_clock: GcClock) -> None:
        self.gc_clock = gc_clock
        self.slowest = PassTiming()
        self.most_cpu_s = 0.0  # of the engine thread, in any one pass
        self.laps = Laps()
        self._thread_cpu = self._process_cpu = self._gc = 0.0

    def start(self) -> Laps:
        self.laps = Laps()
        self._thread_cpu, self._process_cpu = time.thread_time(), time.process_time()
        self._gc = self.gc_clock.total_s
        return self.laps

    def finish(self) -> None:
        wall = time.perf_counter() - self.laps.started
        thread_cpu = time.thread_time() - self._thread_cpu
        self.most_cpu_s = max(self.most_cpu_s, thread_cpu)
        if wall <= self.slowest.wall_s:
            return
        self.slowest = PassTiming(
            wall_s=wall,
            parts=dict(self.laps.parts),
            gc_s=self.gc_clock.total_s - self._gc,
            thread_cpu_s=thread_cpu,
            process_cpu_s=time.process_time() - self._process_cpu,
        )
