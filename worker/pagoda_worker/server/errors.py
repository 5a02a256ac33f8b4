"""OpenAI-style errors: one exception type, one body shape; the engine's refusals and
pydantic's findings turned into it."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import pydantic
from aiohttp import web

from pagoda_worker.engine.errors import InvalidRequest

INVALID_REQUEST = "invalid_request_error"


class APIError(Exception):
    """An error the client should see, with the HTTP status and the field at fault."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        error_type: str = INVALID_REQUEST,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.error_type = error_type
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.message, self.error_type, self.param, self.code)

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=self.status, headers=self.headers)


def error_body(
    message: str, error_type: str = INVALID_REQUEST, param: str | None = None, code=None
) -> dict:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


_UNION_TAGS = {"str", "int", "float", "bool"}


def _is_union_tag(part: str | int) -> bool:
    """pydantic names the branch of a union it tried ("str", "list[int]") in the location."""
    return isinstance(part, str) and (part in _UNION_TAGS or "[" in part)


def field_path(loc: Sequence[str | int]) -> str | None:
    """pydantic's ("messages", 0, "role") -> "messages[0].role"."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not _is_union_tag(part):
            path += f".{part}" if path else part
    return path or None


def from_invalid_request(error: InvalidRequest, param_names: Mapping[str, str]) -> APIError:
    """The engine's refusal as a 400 naming the API's field: `param_names` maps the engine's
    field names to the endpoint's (chat's max_tokens may be max_completion_tokens)."""
    param = param_names.get(error.field, error.field)
    return APIError(400, f"{param}: {error.reason}", param=param)


def from_validation_error(error: pydantic.ValidationError) -> APIError:
    """The first problem pydantic found, as a 400 that names the field."""
    first = error.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        return APIError(400, f"request body is not valid JSON: {first['msg']}", code="invalid_json")
    param = field_path(first["loc"])
    if first["type"] == "extra_forbidden":
        return APIError(400, f"unrecognized request argument: {param}", param=param)
    if param is None:
        return APIError(400, f"request body: {first['msg']}")
    if first["type"] == "missing":
        return APIError(400, f"{param} is required", param=param)
    got = json.dumps(first.get("input"), default=str)[:80]
    if any(_is_union_tag(part) for part in first["loc"]):
        return APIError(400, f"{param} has the wrong type (got {got})", param=param)
    return APIError(400, f"{param}: {first['msg']} (got {got})", param=param)
