"""POST /v1/completions, POST /v1/chat/completions, GET /v1/models."""

from __future__ import annotations

import json

import pydantic
from aiohttp import web

from pagoda_worker.server.deadlines import read_body
from pagoda_worker.server.errors import APIError, from_validation_error
from pagoda_worker.server.generation import Generation, respond
from pagoda_worker.server.prompts import (
    chat_prompt,
    check_chat_messages,
    check_completion_prompt,
    check_context,
    completion_prompts,
    prompt_texts,
)
from pagoda_worker.server.protocol import ChatCompletionRequest, CompletionRequest
from pagoda_worker.server.responses import ChatFormat, CompletionFormat, Echo
from pagoda_worker.server.sampling import (
    chat_max_tokens_param,
    chat_param_names,
    chat_sampling,
    completion_sampling,
)
from pagoda_worker.server.state import STATE, LoadedModel
from pagoda_worker.server.tools import chat_output

DEFAULT_COMPLETION_MAX_TOKENS = 16  # as OpenAI's legacy completions API


async def _parse(request: web.Request, schema: type[pydantic.BaseModel]):
    body = await read_body(request, request.app[STATE].body_timeout_s)
    try:
        return schema.model_validate_json(body)
    except pydantic.ValidationError as e:
        raise from_validation_error(e) from e


def _check_model(requested: str | None, model: LoadedModel) -> None:
    if requested is not None and requested != model.name:
        raise APIError(
            404,
            f"the model {requested!r} does not exist; this server serves {model.name!r}",
            param="model",
            code="model_not_found",
        )


async def completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    model = state.loaded()
    body = await _parse(request, CompletionRequest)
    _check_model(body.model, model)
    max_tokens = DEFAULT_COMPLETION_MAX_TOKENS if body.max_tokens is None else body.max_tokens
    params = completion_sampling(body, max_tokens)
    check_completion_prompt(body.prompt, model.max_prompt_chars)
    prompts = await model.tokenize(completion_prompts, body.prompt, model.tokenizer)
    for prompt in prompts:
        check_context(len(prompt), max_tokens, model.max_model_len, "prompt", "max_tokens")
    echo = None
    if body.echo:
        texts = await model.tokenize(prompt_texts, body.prompt, prompts, model.tokenizer)
        echo = Echo(texts, params.n)
    audit_prompt = body.prompt if isinstance(body.prompt, str) else json.dumps(body.prompt)
    return await respond(
        request,
        state,
        Generation(
            endpoint="completions",
            prompts=prompts,
            params=params,
            format=CompletionFormat(model.token_text, echo),
            stream=bool(body.stream),
            include_usage=body.include_usage,
            continuous_usage=body.continuous_usage,
            audit_prompt=audit_prompt,
            param_names={},
        ),
    )


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    model = state.loaded()
    body = await _parse(request, ChatCompletionRequest)
    _check_model(body.model, model)
    check_chat_messages(body.messages, model.max_prompt_chars)
    output = chat_output(body, model.tool_parser)
    prompt = await model.tokenize(
        chat_prompt, body.messages, model.tokenizer, output.template_tools
    )
    max_tokens_param = chat_max_tokens_param(body)
    max_tokens = body.max_completion_tokens
    if max_tokens is None:
        max_tokens = body.max_tokens
    if max_tokens is None:  # the rest of the context window, as vLLM does
        max_tokens = max(model.max_model_len - len(prompt), 1)
    params = chat_sampling(body, max_tokens, output.structured_output)
    check_context(len(prompt), max_tokens, model.max_model_len, "messages", max_tokens_param)
    audit_prompt = "\n".join(f"{m.role}: {m.text}" for m in body.messages)
    return await respond(
        request,
        state,
        Generation(
            endpoint="chat.completions",
            prompts=[prompt],
            params=params,
            format=ChatFormat(model.token_text, output.parser),
            stream=bool(body.stream),
            include_usage=body.include_usage,
            continuous_usage=body.continuous_usage,
            audit_prompt=audit_prompt,
            param_names=chat_param_names(body),
        ),
    )


async def models(request: web.Request) -> web.Response:
    model = request.app[STATE].loaded()
    card = {
        "id": model.name,
        "object": "model",
        "created": model.created,
        "owned_by": "pagoda",
        "max_model_len": model.max_model_len,
    }
    return web.json_response({"object": "list", "data": [card]})
