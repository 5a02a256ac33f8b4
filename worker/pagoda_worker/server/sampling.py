"""OpenAI request fields -> SamplingParams, with range errors named by their API field."""

from __future__ import annotations

from pagoda_worker.engine.errors import InvalidRequest
from pagoda_worker.engine.sampling_params import SamplingParams, StructuredOutput
from pagoda_worker.server.errors import APIError, from_invalid_request
from pagoda_worker.server.protocol import ChatCompletionRequest, CompletionRequest, SamplingFields
from pagoda_worker.server.structured import response_format_output

MAX_N = 128  # completions per prompt, as OpenAI caps it


def _or(value, default):
    return default if value is None else value


def _logit_bias(request: SamplingFields) -> dict[int, float]:
    """JSON keys are strings: each must spell a token id."""
    bias = {}
    for key, value in (request.logit_bias or {}).items():
        try:
            bias[int(key)] = value
        except ValueError:
            raise APIError(
                400, f"logit_bias: keys must be token ids, got {key!r}", param="logit_bias"
            ) from None
    return bias


def _build(
    request: SamplingFields,
    max_tokens: int,
    logprobs: int | None,
    names: dict[str, str],
    best_of: int | None = None,
    prompt_logprobs: int | None = None,
    structured_output: StructuredOutput | None = None,
) -> SamplingParams:
    for name, value in (("n", request.n), ("best_of", best_of)):
        if value is not None and value > MAX_N:
            raise APIError(400, f"{name}: at most {MAX_N} completions per prompt", param=name)
    if request.stream_options is not None and not request.stream:
        raise APIError(
            400, "stream_options: only allowed when stream is true", param="stream_options"
        )
    stop = [request.stop] if isinstance(request.stop, str) else (request.stop or [])
    top_k = _or(request.top_k, 0)
    try:
        return SamplingParams(
            n=_or(request.n, 1),
            best_of=best_of,
            temperature=_or(request.temperature, 1.0),
            top_p=_or(request.top_p, 1.0),
            top_k=0 if top_k == -1 else top_k,
            min_p=_or(request.min_p, 0.0),
            repetition_penalty=_or(request.repetition_penalty, 1.0),
            presence_penalty=_or(request.presence_penalty, 0.0),
            frequency_penalty=_or(request.frequency_penalty, 0.0),
            seed=request.seed,
            max_tokens=max_tokens,
            stop=stop,
            stop_token_ids=request.stop_token_ids or [],
            ignore_eos=_or(request.ignore_eos, False),
            logprobs=logprobs,
            prompt_logprobs=prompt_logprobs,
            logit_bias=_logit_bias(request),
            structured_output=structured_output,
        )
    except InvalidRequest as e:
        raise from_invalid_request(e, names) from e


def completion_sampling(request: CompletionRequest, max_tokens: int) -> SamplingParams:
    # echo with logprobs lists the prompt's tokens too, with their logprobs.
    prompt_logprobs = request.logprobs if request.echo else None
    structured_output = response_format_output(request.response_format)
    params = _build(
        request,
        max_tokens,
        request.logprobs,
        {},
        request.best_of,
        prompt_logprobs,
        structured_output,
    )
    if request.stream and params.selects_best:  # the best are known only at the end
        raise APIError(
            400, "best_of: streaming needs best_of equal to n (or unset)", param="best_of"
        )
    return params


def chat_sampling(
    request: ChatCompletionRequest, max_tokens: int, structured_output: StructuredOutput | None
) -> SamplingParams:
    if request.top_logprobs is not None and not request.logprobs:
        raise APIError(400, "top_logprobs requires logprobs to be true", param="top_logprobs")
    logprobs = _or(request.top_logprobs, 0) if request.logprobs else None
    names = chat_param_names(request)
    return _build(request, max_tokens, logprobs, names, structured_output=structured_output)


def chat_max_tokens_param(request: ChatCompletionRequest) -> str:
    return "max_tokens" if request.max_completion_tokens is None else "max_completion_tokens"


def chat_param_names(request: ChatCompletionRequest) -> dict[str, str]:
    """The engine's field names -> chat's, for the engine's refusals."""
    return {
        "prompt": "messages",
        "logprobs": "top_logprobs",
        "max_tokens": chat_max_tokens_param(request),
    }
