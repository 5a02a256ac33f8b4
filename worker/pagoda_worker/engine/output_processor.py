"""From the engine core's token ids to what a caller reads: text, stop strings, whole outputs.

The core sends each step's new token ids and nothing it sent before; this keeps the rest per
request (prompt, tokens, text and logprobs so far) and turns every step into RequestOutputs. It
detokenizes and looks for stop strings (CompletionText) where the text is needed: in the
server's front-end process, off the engine's loop. A stop string ends a completion here first;
the caller passes the returned (request id, index) pairs on to the core (`finish_seq`), which
may have computed a token or two past the stop by then: those are dropped here. An abort ends
a request here at once, whatever the core is doing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pagoda_worker.engine.completion_text import CompletionText
from pagoda_worker.engine.messages import CoreOutput, SeqDelta
from pagoda_worker.engine.outputs import (
    CompletionOutput,
    FinishReason,
    RequestMetrics,
    RequestOutput,
    TokenLogprob,
)
from pagoda_worker.engine.sampling_params import SamplingParams
from pagoda_worker.engine.stop_checker import EosIds

FinishedSeq = tuple[str, int]  # (request id, completion index) the core must stop computing


@dataclass
class _Completion:
    text: CompletionText
    wants_logprobs: bool
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    cumulative_logprob: float | None = None  # when logprobs or best_of need it
    finish_reason: FinishReason | None = None


@dataclass
class _News:
    """What one completion gained in one step."""

    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass
class _Request:
    request_id: str
    prompt_token_ids: list[int]
    completions: list[_Completion]
    metrics: RequestMetrics
    num_cached_tokens: int = 0
    prompt_logprobs: list[TokenLogprob | None] | None = None

    @property
    def finished(self) -> bool:
        return all(c.finish_reason is not None for c in self.completions)


class OutputProcessor:
    def __init__(self, tokenizer: Any, eos_token_ids: EosIds) -> None:
        self.tokenizer = tokenizer  # None: token ids only, texts stay empty
        self.eos_token_ids = eos_token_ids
        self._requests: dict[str, _Request] = {}

    def __len__(self) -> int:
        return len(self._requests)

    def add(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        arrival_time: float | None = None,
    ) -> None:
        def completion() -> _Completion:
            # Decoded as the prompt's continuation, so a leading space survives (as in vLLM).
            text = CompletionText(
                self.tokenizer, prompt_token_ids, params, self.eos_token_ids, prompt_context=True
            )
            cumulative = 0.0 if params.needs_logprob else None
            return _Completion(text, params.logprobs is not None, cumulative_logprob=cumulative)

        self._requests[request_id] = _Request(
            request_id,
            prompt_token_ids,
            [completion() for _ in range(params.num_seqs)],
            RequestMetrics(arrival_time=arrival_time or time.time()),
        )

    def drop(self, request_id: str) -> None:
        """Forget a request the engine never took (it refused it)."""
        self._requests.pop(request_id, None)

    def abort(self, request_id: str) -> RequestOutput | None:
        """End the request now; its last output (every open completion: abort), if it was open."""
        request = self._requests.pop(request_id, None)
        if request is None:
            return None
        news = {}
        for index, completion in enumerate(request.completions):
            if completion.finish_reason is None:
                completion.finish_reason = FinishReason.ABORT
                news[index] = _News()
        request.metrics.finished_time = time.time()
        return _request_output(request, news)

    def process(self, outputs: list[CoreOutput]) -> tuple[list[RequestOutput], list[FinishedSeq]]:
        """One step's outputs of the core: what callers get, and what the core must stop."""
        now = time.time()
        results: list[RequestOutput] = []
        stopped: list[FinishedSeq] = []
        for output in outputs:
            request = self._requests.get(output.request_id)
            if request is None:  # ended here already: aborted, or stopped by a string
                continue
            if output.scheduled_time is not None:  # its first output: what is fixed by now
                request.num_cached_tokens = output.num_cached_tokens
                request.metrics.scheduled_time = output.scheduled_time
                request.prompt_logprobs = output.prompt_logprobs
            news = {}
            for delta in output.seqs:
                completion = request.completions[delta.index]
                if completion.finish_reason is None:
                    news[delta.index] = _advance(completion, delta)
                    if completion.finish_reason is not None and delta.finish_reason is None:
                        stopped.append((request.request_id, delta.index))
            if not news:
                continue
            metrics = request.metrics
            metrics.first_token_time = metrics.first_token_time or now
            metrics.last_token_time = now
            if request.finished:
                metrics.finished_time = now
                del self._requests[request.request_id]
            results.append(_request_output(request, news))
        return results, stopped


def _advance(completion: _Completion, delta: SeqDelta) -> _News:
    """Take the step's tokens up to the completion's end (a stop string may come first)."""
    news = _News()
    for at, token in enumerate(delta.token_ids):
        completion.token_ids.append(token)
        news.token_ids.append(token)
        if delta.logprobs is not None:  # `top` comes only with them
            if completion.cumulative_logprob is not None:
                completion.cumulative_logprob += delta.logprobs[at]
            if completion.wants_logprobs and delta.top is not None:
                logprob = TokenLogprob(token, delta.logprobs[at], delta.top[at])
                completion.logprobs.append(logprob)
                news.logprobs.append(logprob)
        text, reason = completion.text.add_token(token)
        news.text += text
        if reason is not None:
            completion.finish_reason = reason
            return news
    if delta.finish_reason is not None:  # the core's verdict stands, whatever the text says
        text, stopped = completion.text.end()
        news.text += text
        completion.finish_reason = stopped or delta.finish_reason
    return news


def _request_output(request: _Request, news: dict[int, _News]) -> RequestOutput:
    none = _News()
    completions = []
    for index, completion in enumerate(request.completions):
        new = news.get(index, none)
        wants_logprobs = completion.wants_logprobs
        completions.append(
            CompletionOutput(
                index=index,
                token_ids=list(completion.token_ids),
                text=completion.text.text,
                new_token_ids=new.token_ids,
                new_text=new.text,
                logprobs=list(completion.logprobs) if wants_logprobs else None,
                new_logprobs=new.logprobs if wants_logprobs else None,
                finish_reason=completion.finish_reason,
                cumulative_logprob=completion.cumulative_logprob,
            )
        )
    return RequestOutput(
        request_id=request.request_id,
        prompt_token_ids=request.prompt_token_ids,
        outputs=completions,
        finished=request.finished,
        num_cached_tokens=request.num_cached_tokens,
        metrics=request.metrics,
        prompt_logprobs=request.prompt_logprobs,
    )
