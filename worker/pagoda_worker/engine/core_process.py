"""The engine process: load the engine core, say Ready, run the core loop until told to stop.

The server's front end starts it (core_client.py) with the `spawn` method (CUDA does not survive
a fork) and talks to it over two ZeroMQ PUSH/PULL sockets on Unix-domain paths that the front
end binds: commands in, reports out, msgpack-encoded (messages.py). The process ignores SIGINT
(a terminal's Ctrl-C reaches the whole process group, and the front end decides when the engine
stops) and exits by itself if the front end's process is gone.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
from dataclasses import dataclass, field

import zmq

from pagoda_worker.engine.config import EngineConfig
from pagoda_worker.engine.core_loop import CoreLoop, CoreLoopOptions
from pagoda_worker.engine.messages import (
    FromCore,
    LoadFailed,
    Ready,
    ToCore,
    decode_to_core,
    encode,
)
from pagoda_worker.models.source import ModelLoadError

log = logging.getLogger("pagoda.engine")

DEFAULT_CORE = "pagoda_worker.engine.core:EngineCore"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # as `pagoda serve` logs


@dataclass
class CoreSpec:
    """Everything the engine process needs, pickled across the spawn."""

    config: EngineConfig
    inputs: str  # ZeroMQ address of the commands
    outputs: str  # ZeroMQ address of the reports
    loop: CoreLoopOptions = field(default_factory=CoreLoopOptions)
    core: str = DEFAULT_CORE  # "module:callable" building the core from the config
    log_level: int = logging.INFO


class ZmqChannel:
    def __init__(self, spec: CoreSpec) -> None:
        self._context = zmq.Context()
        self._inputs = self._context.socket(zmq.PULL)
        self._inputs.connect(spec.inputs)
        self._outputs = self._context.socket(zmq.PUSH)
        self._outputs.setsockopt(zmq.LINGER, 1000)  # the last report (Failed) gets out
        self._outputs.connect(spec.outputs)
        self._parent = os.getppid()

    def receive(self, wait_s: float) -> list[ToCore]:
        if not self._inputs.poll(int(wait_s * 1000)):  # whole ms: pyzmq would cut them too
            if os.getppid() != self._parent:  # the front end died without a word
                raise SystemExit("the front end's process is gone")
            return []
        messages: list[ToCore] = []
        while True:
            try:
                frame = self._inputs.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return messages
            messages.append(decode_to_core(frame.buffer))

    def send(self, message: FromCore) -> None:
        self._outputs.send(encode(message), copy=False)

    def close(self) -> None:
        self._context.destroy()


def describe(core) -> Ready:
    return Ready(
        model_name=core.model_name,
        model_folder=str(core.model_folder),
        max_model_len=core.max_model_len,
        kv_capacity_tokens=core.kv_capacity_tokens,
        eos_token_ids=sorted(core.eos_token_ids),
    )


def build_core(spec: CoreSpec):
    module, _, name = spec.core.partition(":")
    return getattr(importlib.import_module(module), name)(spec.config)


def run_engine_core(spec: CoreSpec) -> None:
    """The engine process's main function."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=spec.log_level, format=LOG_FORMAT)
    channel = ZmqChannel(spec)
    try:
        try:
            core = build_core(spec)
        except ModelLoadError as e:  # says what is wrong with the model: no traceback
            channel.send(LoadFailed(str(e)))
            raise SystemExit(1) from e
        except Exception as e:
            log.exception("the engine could not start")
            channel.send(LoadFailed(f"{type(e).__name__}: {e}"))
            raise SystemExit(1) from e
        channel.send(describe(core))
        try:
            CoreLoop(core, channel, spec.loop).run()
        finally:
            core.close()  # the other tensor-parallel ranks stop with it
    finally:
        channel.close()
