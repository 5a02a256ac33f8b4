"""The requests of one API call, as the server's handler reads them: a stream of outputs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from pagoda_worker.engine.outputs import RequestOutput, followed_by

CUT_TIMEOUT = "timeout"  # the request ran past its timeout
CUT_SHUTDOWN = "shutdown"  # the server stopped serving it (drain deadline, second signal)


class RequestGroup:
    """The requests of one API call (one per prompt), streamed together in arrival order."""

    def __init__(self, request_ids: list[str], abort: Callable[[RequestGroup], None]) -> None:
        self.request_ids = request_ids
        self.index = {rid: i for i, rid in enumerate(request_ids)}
        self.unfinished = set(request_ids)
        self.cut_because: str | None = None  # why the server ended it early: CUT_* below
        self._abort = abort
        self._queue: asyncio.Queue[RequestOutput | BaseException] = asyncio.Queue()

    @property
    def finished(self) -> bool:
        return not self.unfinished

    @property
    def timed_out(self) -> bool:
        return self.cut_because == CUT_TIMEOUT

    def cut(self, reason: str) -> None:
        """Abort on the server's own initiative; the caller tells its client why."""
        if self.unfinished:
            self.cut_because = reason
            self.abort()

    def abort(self) -> None:
        """Stop generating now; the engine frees the KV blocks of the unfinished requests."""
        if self.unfinished:
            self._abort(self)

    def put(self, output: RequestOutput) -> None:
        if output.finished:
            self.unfinished.discard(output.request_id)
        self._queue.put_nowait(output)

    def fail(self, error: BaseException) -> None:
        self.unfinished.clear()
        self._queue.put_nowait(error)

    async def __aiter__(self) -> AsyncIterator[tuple[int, RequestOutput]]:
        """(prompt index, output) until every request has finished; engine errors raise."""
        async for batch in self.batches(coalesce=False):
            for item in batch:
                yield item

    async def batches(self, coalesce: bool) -> AsyncIterator[list[tuple[int, RequestOutput]]]:
        """Outputs as they come, one at a time; with `coalesce`, all that are queued already
        (the caller fell behind), consecutive outputs of one request merged into one."""
        while not (self.finished and self._queue.empty()):
            items = [await self._queue.get()]
            while coalesce and not self._queue.empty():
                items.append(self._queue.get_nowait())
            error = next((i for i in items if isinstance(i, BaseException)), None)
            outputs = [i for i in items if not isinstance(i, BaseException)]
            if outputs:
                yield self._merged(outputs)
            if error is not None:
                raise error

    def _merged(self, outputs: list[RequestOutput]) -> list[tuple[int, RequestOutput]]:
        latest: dict[str, RequestOutput] = {}
        for output in outputs:
            earlier = latest.get(output.request_id)
            latest[output.request_id] = output if earlier is None else followed_by(earlier, output)
        return [(self.index[rid], output) for rid, output in latest.items()]
