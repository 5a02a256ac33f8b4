"""The driver's side of tensor parallelism: start ranks 1..N-1 and send them each step.

Each follower is a process of its own (`python -m pagoda_worker.parallel.follower`: a subprocess,
so a daemonic engine process may start it too), holding one end of a socket pair. Over it the
driver learns that the follower is about to join the group (so a follower that died starting is
an error, not a wait), then whether it loaded its part of the model; then the driver sends each
step's StepArrays (a few kilobytes, pickled once for all); None tells it to stop. Tensors (the
all-reduces, the unread tokens) go through torch.distributed instead. A follower whose driver is
gone reads EOF and exits.

A follower that dies while serving is noticed by a watcher thread at once, whatever the driver is
doing: `check` raises RankLost from then on, and `send` checks first, so no step starts a
collective that would wait for the dead rank (under NCCL, until COLLECTIVE_TIMEOUT).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import pickle
import subprocess
import sys
import tempfile
import threading
from multiprocessing.connection import Connection, Pipe
from pathlib import Path

import torch

from pagoda_worker.engine.config import EngineConfig
from pagoda_worker.engine.model_runner import StepArrays
from pagoda_worker.models.source import ModelLoadError
from pagoda_worker.parallel.group import TensorParallel, join, leave

log = logging.getLogger(__name__)

STOP_WAIT_S = 10.0  # for a follower to exit after it is told to, before it is killed
JOINING = "joining"  # a follower's first word: it calls `join` next


class RankLost(RuntimeError):
    """Another tensor-parallel rank died: the engine cannot go on without its part."""


class Followers:
    def __init__(self, config: EngineConfig, device: torch.device) -> None:
        """Start ranks 1..N-1 of `config` (whose model is a folder) and join them as rank 0."""
        size = config.tensor_parallel_size
        self._folder = tempfile.TemporaryDirectory(prefix="pagoda-tp-")
        store = str(Path(self._folder.name) / "store")  # the group's rendezvous
        self.processes: list[subprocess.Popen] = []
        self.connections: list[Connection] = []
        self._stopping = False
        self.lost: str | None = None  # which rank died, once one has
        for rank in range(1, size):
            ours, theirs = Pipe()
            spec = {"config": dataclasses.asdict(config), "rank": rank, "size": size,
                    "store": store, "fd": theirs.fileno(),
                    "log_level": logging.getLogger().getEffectiveLevel()}  # fmt: skip
            command = [sys.executable, "-m", "pagoda_worker.parallel.follower", json.dumps(spec)]
            process = subprocess.Popen(command, pass_fds=[theirs.fileno()])
            theirs.close()  # the follower's end is its own now: its exit reads as EOF here
            self.processes.append(process)
            self.connections.append(ours)
            threading.Thread(target=self._watch, args=(rank, process), daemon=True).start()
        try:
            for rank in range(1, size):
                said = self._receive(rank, "starting")
                if said != JOINING:
                    raise ModelLoadError(f"tensor-parallel rank {rank}: {said}")
            self.tp: TensorParallel = join(0, size, store, device)
        except BaseException:
            self.stop()
            raise

    def wait_loaded(self) -> None:
        """Returns once every follower has loaded its part; raises ModelLoadError naming the
        first that could not."""
        for rank in range(1, len(self.connections) + 1):
            failure = self._receive(rank, "loading")
            if failure is not None:
                raise ModelLoadError(f"tensor-parallel rank {rank}: {failure}")

    def _receive(self, rank: int, doing: str) -> object:
        try:
            return self.connections[rank - 1].recv()
        except EOFError:
            code = self.processes[rank - 1].wait()
            raise ModelLoadError(
                f"tensor-parallel rank {rank} exited ({code}) while {doing}"
            ) from None

    def _watch(self, rank: int, process: subprocess.Popen) -> None:
        """Say which rank died, when one does: the engine's own error (a collective that failed,
        or one that waits) does not."""
        code = process.wait()
        if not self._stopping:
            self.lost = f"tensor-parallel rank {rank} (pid {process.pid}) exited ({code})"
            log.error("%s: the engine cannot go on without it", self.lost)

    def check(self) -> None:
        """Raises RankLost once a follower has died."""
        if self.lost is not None:
            raise RankLost(self.lost)

    def send(self, arrays: StepArrays) -> None:
        self.check()
        message = pickle.dumps(arrays, protocol=pickle.HIGHEST_PROTOCOL)  # once for all ranks
        for connection in self.connections:
            connection.send_bytes(message)

    def stop(self) -> None:
        self._stopping = True
        for connection in self.connections:
            with contextlib.suppress(OSError):  # it is gone already
                connection.send(None)
            connection.close()
        for process in self.processes:
            try:
                process.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                log.warning("tensor-parallel follower %d did not stop: killing it", process.pid)
                process.kill()
                process.wait()
        leave()
        self._folder.cleanup()
