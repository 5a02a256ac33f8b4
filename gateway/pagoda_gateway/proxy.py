"""One request's trip to a worker: choose, send, retry before the first byte, then relay.

Nothing reaches the client until the worker has produced its first token (or its whole answer),
so a connect error, a 503 or 429, or a worker that dies before its first token is retried on
another pod, within a bounded number of attempts and time. After that the stream is the
client's: events pass through one by one as they arrive, and a worker failure ends the stream
with an error event and [DONE], never a silent cut. A client that leaves cancels the handler,
which closes the worker's connection, and the worker aborts the generation.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from pagoda_worker.server.access_log import REQUEST_ID, REQUEST_ID_HEADER
from pagoda_worker.server.deadlines import write_within
from pagoda_worker.server.errors import APIError

from .affinity import Affinity
from .backends import Backend, BackendPool
from .hold_queue import HoldQueue, HoldRefused
from .routing import Router
from .sse import Event, error_event, is_opening

BACKEND_HEADER = "x-pagoda-backend"
MAX_EVENT_BYTES = 16 * 2**20
RETRYABLE_STATUS = (429, 503)
RETRYABLE_ERROR_TYPES = ("service_unavailable", "rate_limit_error")
NULL_USAGE = b',"usage":null}\n\n'


@dataclass
class ProxySettings:
    max_attempts: int = 3
    retry_budget_s: float = 15.0  # from the first attempt's start; the hold comes before it
    connect_timeout_s: float = 3.0
    write_timeout_s: float = 30.0  # for one event, to a client that stopped reading
    backend_api_key: str | None = None


@dataclass
class Outcome:
    """What one request came to: for the access log, the metrics and the tenant's tokens."""

    started_at: float  # the event loop's clock when the request arrived
    backend: str | None = None
    attempts: int = 0
    first_byte_s: float | None = None
    prompt_tokens: int | None = None  # from the worker's usage, when it sent one
    completion_tokens: int | None = None
    chunks: int = 0  # streamed chunks with choices: the tokens' stand-in without usage

    def take_usage(self, usage: dict) -> None:
        self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        self.completion_tokens = int(usage.get("completion_tokens") or 0)


class Retryable(Exception):
    """A failure before anything reached the client: another pod may serve the request."""

    def __init__(
        self, status: int, message: str, error_type: str, eject: bool, retry_after: str | None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.eject = eject
        self.retry_after = retry_after

    @classmethod
    def lost(cls, backend: Backend, what: str) -> Retryable:
        return cls(502, f"worker {backend.name} {what}", "service_unavailable", True, None)

    @classmethod
    def from_body(cls, status: int, body: bytes, retry_after: str | None) -> Retryable:
        try:
            error = json.loads(body)["error"]
            message, error_type = str(error["message"]), str(error.get("type"))
        except (ValueError, KeyError, TypeError):
            message, error_type = body.decode(errors="replace")[:500], "service_unavailable"
        return cls(status, message, error_type, False, retry_after)

    def api_error(self) -> APIError:
        headers = {"Retry-After": self.retry_after} if self.retry_after else None
        return APIError(self.status, self.message, error_type=self.error_type, headers=headers)


class Forwarder:
    def __init__(
        self,
        pool: BackendPool,
        router: Router,
        hold: HoldQueue,
        session: aiohttp.ClientSession,
        settings: ProxySettings,
    ) -> None:
        self.pool = pool
        self.router = router
        self.hold = hold
        self.session = session
        self.settings = settings
        self.retries = 0  # attempts after a retryable failure, for the metrics

    async def forward(
        self,
        request: web.Request,
        outcome: Outcome,
        body: dict | None,
        affinity: Affinity,
        headers: dict[str, str],
    ) -> web.StreamResponse:
        """Sends `body` (None: a GET) to request.path on a chosen worker and returns what the
        client gets; `headers` go on that response."""
        loop = asyncio.get_running_loop()
        stream, strip_usage, payload = _upstream_body(body)
        last: Retryable | None = None
        tried: set[str] = set()
        started = loop.time()
        for attempt in range(self.settings.max_attempts):
            if attempt == 0:
                try:
                    _, backends = await self.hold.backends()
                except HoldRefused as e:
                    raise APIError(
                        503,
                        str(e),
                        error_type="service_unavailable",
                        headers={"Retry-After": str(e.retry_after_s)},
                    ) from None
                started = loop.time()
            else:
                _, backends = self.pool.candidates(exclude=tried)
                if not backends or loop.time() - started > self.settings.retry_budget_s:
                    break
                self.retries += 1
            backend = self.router.choose(backends, affinity.key, self.pool.load, affinity.blocks)
            tried.add(backend.name)
            outcome.attempts += 1
            outcome.backend = backend.name
            self.pool.started(backend)
            try:
                response = await self._attempt(
                    request, backend, payload, stream, strip_usage, outcome, headers
                )
                if response.status == 200:
                    self.router.served(affinity.blocks, backend)
                return response
            except Retryable as e:
                last = e
                if e.eject:
                    self.pool.eject(backend)
            finally:
                self.pool.finished(backend)
        assert last is not None
        raise last.api_error()

    async def _attempt(
        self,
        request: web.Request,
        backend: Backend,
        payload: bytes | None,
        stream: bool,
        strip_usage: bool,
        outcome: Outcome,
        headers: dict[str, str],
    ) -> web.StreamResponse:
        upstream_headers = {REQUEST_ID_HEADER: request[REQUEST_ID]}
        if payload is not None:
            upstream_headers["Content-Type"] = "application/json"
        if self.settings.backend_api_key:
            upstream_headers["Authorization"] = "Bearer " + self.settings.backend_api_key
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.settings.connect_timeout_s)
        try:
            upstream = await self.session.request(
                request.method,
                backend.url + request.path,
                data=payload,
                headers=upstream_headers,
                timeout=timeout,
            )
        except aiohttp.ClientConnectorError as e:
            raise Retryable.lost(backend, f"refused the connection ({e.os_error})") from None
        except (aiohttp.ClientError, TimeoutError):
            raise Retryable.lost(backend, "closed the connection before answering") from None
        headers = headers | {BACKEND_HEADER: backend.name}
        try:
            if upstream.status in RETRYABLE_STATUS:
                body = await _read(upstream, backend)
                raise Retryable.from_body(
                    upstream.status, body, upstream.headers.get("Retry-After")
                )
            if stream and upstream.status == 200:
                return await self._relay(request, upstream, backend, strip_usage, outcome, headers)
            body = await _read(upstream, backend)
            outcome.first_byte_s = asyncio.get_running_loop().time() - outcome.started_at
            if upstream.status == 200 and payload is not None:
                _count_whole(body, outcome)
            return web.Response(
                body=body,
                status=upstream.status,
                content_type=upstream.content_type,
                headers=headers,
            )
        finally:
            upstream.close()  # a relay cut short must not hand a half-read connection back

    async def _relay(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        backend: Backend,
        strip_usage: bool,
        outcome: Outcome,
        headers: dict[str, str],
    ) -> web.StreamResponse:
        held: list[Event] = []  # opening chunks, sent with the first token
        while True:
            event = await _next_event(upstream, backend)
            if event is None:
                raise Retryable.lost(backend, "ended the stream before its first token")
            payload = event.payload()
            error = (payload or {}).get("error")
            if isinstance(error, dict) and error.get("type") in RETRYABLE_ERROR_TYPES:
                raise Retryable(503, str(error.get("message")), str(error["type"]), False, None)
            held.append(event)
            if not is_opening(payload):
                break
        response = web.StreamResponse(
            headers=headers
            | {
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                REQUEST_ID_HEADER: request[REQUEST_ID],
            }
        )
        await response.prepare(request)
        outcome.first_byte_s = asyncio.get_running_loop().time() - outcome.started_at
        try:
            for event in held:
                await self._pass(request, response, event, strip_usage, outcome)
            last = held[-1]
            while not last.done:
                try:
                    event = await _next_event(upstream, backend)
                except Retryable as e:
                    await self._write(request, response, error_event(e.message))
                    break
                if event is None:
                    ended = f"worker {backend.name} ended the stream without [DONE]"
                    await self._write(request, response, error_event(ended))
                    break
                await self._pass(request, response, event, strip_usage, outcome)
                last = event
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client left; closing the upstream connection tells the worker
        return response

    async def _pass(
        self,
        request: web.Request,
        response: web.StreamResponse,
        event: Event,
        strip_usage: bool,
        outcome: Outcome,
    ) -> None:
        if event.carries_usage() and (payload := event.payload()):
            outcome.take_usage(payload.get("usage") or {})
            if strip_usage and not payload.get("choices"):
                return  # the usage chunk the gateway asked for, not the client
        elif b'"choices":[{' in event.raw or b'"choices": [{' in event.raw:
            outcome.chunks += 1
        raw = event.raw
        if strip_usage and raw.endswith(NULL_USAGE):  # what include_usage added to each chunk
            raw = raw[: -len(NULL_USAGE)] + b"}\n\n"
        await self._write(request, response, raw)

    async def _write(self, request: web.Request, response: web.StreamResponse, data: bytes):
        await write_within(request, response, data, self.settings.write_timeout_s)


def _upstream_body(body: dict | None) -> tuple[bool, bool, bytes | None]:
    """(streamed, usage chunk to strip, bytes to send). A stream asks the worker for its usage
    chunk, which settles the tenant's tokens; the client gets it only if it asked too."""
    if body is None:
        return False, False, None
    stream = bool(body.get("stream"))
    options = body.get("stream_options")
    strip = stream and not (isinstance(options, dict) and options.get("include_usage"))
    if strip:
        body = body | {"stream_options": (options or {}) | {"include_usage": True}}
    return stream, strip, json.dumps(body).encode()


async def _read(upstream: aiohttp.ClientResponse, backend: Backend) -> bytes:
    try:
        return await upstream.read()
    except (aiohttp.ClientError, TimeoutError):
        raise Retryable.lost(backend, "closed the connection while answering") from None


async def _next_event(upstream: aiohttp.ClientResponse, backend: Backend) -> Event | None:
    """The next whole event, or None at the end of the stream."""
    try:
        data = await upstream.content.readuntil(b"\n\n", max_size=MAX_EVENT_BYTES)
    except (aiohttp.ClientError, TimeoutError):
        raise Retryable.lost(backend, "closed the connection mid-stream") from None
    except ValueError:  # an event over MAX_EVENT_BYTES
        raise Retryable.lost(backend, "sent an event too large to relay") from None
    return Event(data) if data.endswith(b"\n\n") else None


def _count_whole(body: bytes, outcome: Outcome) -> None:
    try:
        usage = json.loads(body).get("usage")
    except (ValueError, AttributeError):
        return
    if isinstance(usage, dict):
        outcome.take_usage(usage)
