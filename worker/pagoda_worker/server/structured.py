"""`response_format` -> the engine's StructuredOutput, and the schema check every constrained
request passes before it reaches the engine."""

from __future__ import annotations

import json

from pagoda_worker.engine.grammar import schema_error
from pagoda_worker.engine.sampling_params import StructuredOutput
from pagoda_worker.server.errors import APIError
from pagoda_worker.server.protocol import ResponseFormat


def compiled(schema: dict | None, param: str) -> StructuredOutput:
    """A schema the engine can follow (None: any JSON object); 400 naming `param` if not."""
    structured = StructuredOutput(None if schema is None else json.dumps(schema))
    error = schema_error(structured)
    if error:
        raise APIError(400, f"{param}: the JSON schema is not supported: {error}", param=param)
    return structured


def response_format_output(response_format: ResponseFormat | None) -> StructuredOutput | None:
    if response_format is None:
        return None
    wants_schema = response_format.type == "json_schema"
    if wants_schema != (response_format.json_schema is not None):
        needed = "required" if wants_schema else "only allowed"
        raise APIError(
            400,
            f"response_format.json_schema is {needed} when response_format.type is json_schema",
            param="response_format.json_schema",
        )
    if response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return StructuredOutput(None)
    json_schema = response_format.json_schema
    assert json_schema is not None, "checked above: type json_schema requires it"
    return compiled(json_schema.schema_, "response_format.json_schema.schema")
