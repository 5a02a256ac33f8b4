"""The front end's handle on the engine process: start it, send it commands, hear its reports,
notice at once when it dies.

Death is noticed through the process's sentinel (a file descriptor that becomes readable when
the process ends), on the event loop itself: no polling, no waiting for a heartbeat to go
stale. The sockets are bound here, on Unix-domain paths in a private temporary folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import shutil
import tempfile
from collections.abc import Callable

import zmq
import zmq.asyncio

from pagoda_worker.engine.config import EngineConfig
from pagoda_worker.engine.core_loop import CoreLoopOptions
from pagoda_worker.engine.core_process import DEFAULT_CORE, CoreSpec, run_engine_core
from pagoda_worker.engine.messages import (
    FromCore,
    LoadFailed,
    Ready,
    Shutdown,
    ToCore,
    decode_from_core,
    encode,
)

log = logging.getLogger("pagoda.engine")


class EngineStartError(RuntimeError):
    """The engine process could not load the model (the message says why) or died trying."""


class EngineProcess:
    def __init__(
        self,
        config: EngineConfig,
        loop_options: CoreLoopOptions | None = None,
        core: str = DEFAULT_CORE,
    ) -> None:
        self._folder = tempfile.mkdtemp(prefix="pagoda-engine-")
        self._context = zmq.asyncio.Context()
        self._commands = self._context.socket(zmq.PUSH)
        self._commands.bind(f"ipc://{self._folder}/commands")
        self._reports = self._context.socket(zmq.PULL)
        self._reports.bind(f"ipc://{self._folder}/reports")
        spec = CoreSpec(
            config=config,
            inputs=f"ipc://{self._folder}/commands",
            outputs=f"ipc://{self._folder}/reports",
            loop=loop_options or CoreLoopOptions(),
            core=core,
            log_level=logging.getLogger().getEffectiveLevel(),
        )
        context = multiprocessing.get_context("spawn")  # CUDA does not survive a fork
        self.process = context.Process(
            target=run_engine_core, args=(spec,), name="pagoda-engine", daemon=True
        )
        self._receiver: asyncio.Task | None = None  # once the model is loaded
        self._reaper: asyncio.Task | None = None

    async def start(
        self, on_message: Callable[[FromCore], None], on_exit: Callable[[int | None], None]
    ) -> Ready:
        """Start the process and wait until the model is loaded; then every message goes to
        on_message, and on_exit(exit code) is called once if the process ends."""
        loop = asyncio.get_running_loop()
        self.process.start()
        exited = loop.create_future()
        loop.add_reader(self.process.sentinel, self._on_sentinel, exited, on_exit)
        first = asyncio.ensure_future(self._reports.recv(copy=False))
        await asyncio.wait([first, exited], return_when=asyncio.FIRST_COMPLETED)
        if not first.done():
            first.cancel()
            raise EngineStartError(f"the engine process exited with code {exited.result()}")
        message = decode_from_core(first.result().buffer)
        if isinstance(message, LoadFailed):
            raise EngineStartError(message.error)
        if not isinstance(message, Ready):
            raise EngineStartError(f"the engine process said {message!r} before it was ready")
        self._receiver = asyncio.create_task(self._receive(on_message), name="engine-reports")
        return message

    def _on_sentinel(self, exited: asyncio.Future, on_exit: Callable[[int | None], None]) -> None:
        asyncio.get_running_loop().remove_reader(self.process.sentinel)
        self._reaper = asyncio.create_task(self._reap(exited, on_exit), name="engine-reaper")

    async def _reap(self, exited: asyncio.Future, on_exit: Callable[[int | None], None]) -> None:
        """The sentinel fires as the process ends; its exit code comes a moment later."""
        await asyncio.to_thread(self.process.join, 5.0)
        if not exited.done():
            exited.set_result(self.process.exitcode)
        on_exit(self.process.exitcode)

    async def _receive(self, on_message: Callable[[FromCore], None]) -> None:
        while True:
            frame = await self._reports.recv(copy=False)
            on_message(decode_from_core(frame.buffer))

    def send(self, command: ToCore) -> None:
        self._commands.send(encode(command), copy=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the loop to stop; terminate, then kill, a process that does not. One still
        loading is terminated at once: it reads no commands yet."""
        if self.process.is_alive():
            with contextlib.suppress(zmq.ZMQError):
                self.send(Shutdown())
            endings = (None,) if self._receiver else ()
            for ending in (*endings, self.process.terminate, self.process.kill):
                if ending:
                    ending()
                await asyncio.to_thread(self.process.join, timeout_s)
                if not self.process.is_alive():
                    break
        if self._receiver:
            self._receiver.cancel()
        with contextlib.suppress(ValueError, RuntimeError):  # gone already, or loop closed
            asyncio.get_running_loop().remove_reader(self.process.sentinel)
        self._context.destroy(linger=0)
        shutil.rmtree(self._folder, ignore_errors=True)
