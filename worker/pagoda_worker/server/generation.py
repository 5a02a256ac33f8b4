"""Run one API call through the engine and answer it: a whole JSON body, or an SSE stream.

Each prompt is one engine request (its `n` completions share the prompt's KV blocks);
choice `i * n + j` is completion j of prompt i. With `best_of`, a prompt's request generates
best_of completions and the n most likely are returned (usage counts them all, as vLLM's
does). However the handler ends (done, client gone, error), unfinished requests are aborted so
their KV blocks are freed at once.

A request the server cuts (its timeout, the drain deadline) never looks complete: a whole
response becomes an error status, a stream ends with an error event and `[DONE]`. "abort"
is not an OpenAI finish reason, so aborted choices are never shown.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

import msgspec
from aiohttp import web

from pagoda_worker.engine.async_engine import EngineDeadError, QueueFullError
from pagoda_worker.engine.errors import InvalidRequest
from pagoda_worker.engine.outputs import CompletionOutput, FinishReason, RequestOutput, most_likely
from pagoda_worker.engine.request_group import CUT_TIMEOUT, RequestGroup
from pagoda_worker.engine.sampling_params import SamplingParams
from pagoda_worker.server.access_log import LOG_FIELDS, REQUEST_ID, REQUEST_ID_HEADER
from pagoda_worker.server.deadlines import write_within
from pagoda_worker.server.errors import APIError, from_invalid_request
from pagoda_worker.server.responses import Format, usage
from pagoda_worker.server.state import LoadedModel, WorkerState

log = logging.getLogger("pagoda.server")

encode_json = msgspec.json.Encoder().encode  # several times faster than json.dumps, per chunk


@dataclass
class Generation:
    endpoint: str
    prompts: list[list[int]]
    params: SamplingParams
    format: Format
    stream: bool
    include_usage: bool
    continuous_usage: bool  # usage so far in every streamed chunk
    audit_prompt: str  # what the audit log records as the prompt
    param_names: dict[str, str]  # engine field -> API field, for the engine's refusals


async def respond(request: web.Request, state: WorkerState, gen: Generation) -> web.StreamResponse:
    model = state.loaded()
    with state.generating():  # a drain waits for this, and for nothing before it
        group = await _submit(model, gen)
        call = Answer(request, state, model, gen, group)
        try:
            return await (call.stream() if gen.stream else call.whole())
        finally:
            if not group.finished:
                group.abort()
            if group.timed_out:
                model.metrics.timeout()
            call.account()


def _cut_error(group: RequestGroup, model: LoadedModel) -> APIError:
    """Why the server ended the group early, for its client."""
    if group.cut_because == CUT_TIMEOUT:
        timeout_s = model.engine.options.request_timeout_s
        return APIError(
            504,
            f"the request ran past the server's timeout of {timeout_s:g} s and was stopped",
            error_type="timeout_error",
            code="request_timeout",
        )
    return APIError(
        503,
        "the server is shutting down and stopped this request",
        error_type="service_unavailable",
        code="server_shutdown",
    )


async def _submit(model: LoadedModel, gen: Generation) -> RequestGroup:
    try:
        return await model.engine.generate(gen.prompts, gen.params)
    except QueueFullError as e:
        model.metrics.reject("queue_full")
        raise APIError(
            429,
            str(e),
            error_type="rate_limit_error",
            code="queue_full",
            headers={"Retry-After": str(e.retry_after_s)},
        ) from e
    except EngineDeadError as e:
        raise APIError(503, str(e), error_type="service_unavailable") from e
    except InvalidRequest as e:
        raise from_invalid_request(e, gen.param_names) from e


class Answer:
    """The answer to one API call, whole or streamed: its envelope, choices and accounting."""

    def __init__(self, request, state, model, gen, group) -> None:
        self.request: web.Request = request
        self.state: WorkerState = state
        self.model: LoadedModel = model
        self.gen: Generation = gen
        self.group: RequestGroup = group
        self.id = gen.format.id_prefix + uuid.uuid4().hex
        self.created = int(time.time())
        self.finals: dict[int, RequestOutput] = {}
        self.streamed_tokens = 0
        self.disconnected = False

    def envelope(self, choices: list[dict], chunk: bool) -> dict:
        fmt = self.gen.format
        return {
            "id": self.id,
            "object": fmt.chunk_object if chunk else fmt.object,
            "created": self.created,
            "model": self.model.name,
            "choices": choices,
        }

    def choice_index(self, prompt_index: int, completion_index: int) -> int:
        return prompt_index * self.gen.params.n + completion_index

    def returned(self, prompt_index: int) -> list[CompletionOutput]:
        """The completions of a finished prompt that its client gets (best_of picks)."""
        return most_likely(self.finals[prompt_index].outputs, self.gen.params.n)

    def usage(self) -> dict:
        outputs = self.finals.values()
        prompt = sum(len(o.prompt_token_ids) for o in outputs)
        completion = sum(len(c.token_ids) for o in outputs for c in o.outputs)
        return usage(prompt, completion)

    async def whole(self) -> web.Response:
        try:
            async for i, output in self.group:
                if output.finished:
                    self.finals[i] = output
        except EngineDeadError as e:
            raise APIError(503, str(e), error_type="service_unavailable") from e
        if self.group.cut_because:
            raise _cut_error(self.group, self.model)
        choices = [
            self.gen.format.final_choice(self.choice_index(i, c.index), c, self.finals[i])
            for i in sorted(self.finals)
            for c in self.returned(i)
        ]
        body = self.envelope(choices, chunk=False) | {"usage": self.usage()}
        return web.json_response(body)

    async def stream(self) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                REQUEST_ID_HEADER: self.request[REQUEST_ID],
            }
        )
        await response.prepare(self.request)
        fmt, gen = self.gen.format, self.gen
        prompt_tokens = sum(len(p) for p in gen.prompts)

        async def send(data: dict | bytes) -> None:
            if isinstance(data, dict):
                if gen.continuous_usage:
                    data["usage"] = usage(prompt_tokens, self.streamed_tokens)
                elif gen.include_usage:
                    data["usage"] = None
                data = encode_json(data)
            event = b"data: " + data + b"\n\n"
            await write_within(self.request, response, event, self.state.write_timeout_s)

        try:
            opening = fmt.opening_choices(len(self.gen.prompts) * self.gen.params.n)
            if opening:
                await send(self.envelope(opening, chunk=True))
            error = await self._stream_outputs(send)
            if error:
                await send(encode_json(error.body()))
            elif gen.include_usage:
                await send(encode_json(self.envelope([], chunk=True) | {"usage": self.usage()}))
            await send(b"[DONE]")
            await response.write_eof()
        except ConnectionResetError:
            self.disconnected = True  # the finally in respond() aborts the requests
        return response

    async def _stream_outputs(self, send) -> APIError | None:
        """Streams the choices, one chunk per engine step (or, coalescing, per catch-up);
        returns the error that ended the stream early, if one did."""
        reported_finish: set[int] = set()
        try:
            async for batch in self.group.batches(coalesce=self.state.stream_coalesce):
                choices = []
                for i, output in batch:
                    for completion in output.outputs:
                        self.streamed_tokens += len(completion.new_token_ids)
                        index = self.choice_index(i, completion.index)
                        if completion.finish_reason is FinishReason.ABORT:
                            continue
                        if (
                            completion.new_token_ids
                            or completion.new_text
                            or (completion.finished and index not in reported_finish)
                        ):
                            choices.append(self.gen.format.delta_choice(index, completion, output))
                            if completion.finished:
                                reported_finish.add(index)
                    if output.finished:
                        self.finals[i] = output
                if choices:
                    await send(self.envelope(choices, chunk=True))
        except EngineDeadError as e:
            return APIError(503, str(e), error_type="service_unavailable")
        return _cut_error(self.group, self.model) if self.group.cut_because else None

    def account(self) -> None:
        """Access-log fields and the audit record, whatever became of the call."""
        u = self.usage()
        self.request[LOG_FIELDS].update(
            model=self.model.name,
            response_id=self.id,
            stream=self.gen.stream,
            prompt_tokens=u["prompt_tokens"],
            completion_tokens=u["completion_tokens"],
            finish_reasons=sorted(
                {str(c.finish_reason) for i in self.finals for c in self.returned(i)}
            ),
            timed_out=self.group.timed_out,
            disconnected=self.disconnected or not self.group.finished,
        )
        completions = [c.text for i in sorted(self.finals) for c in self.returned(i)]
        self.state.audit.record(
            self.request[REQUEST_ID], self.gen.endpoint, self.gen.audit_prompt, completions
        )
