"""A chat request's `tools`, `tool_choice` and `response_format` -> what the chat template
shows, how the engine constrains the completion, and how the completion is read back.

- `none` (the default without tools): no tools in the prompt, no parsing.
- `auto` (the default with tools): tools in the prompt; the model's own call format is
  parsed (tool_parsers.py). A completion held to JSON by response_format is not parsed.
- `required` or a named function: a grammar makes the completion a JSON array of calls,
  `[{"name": ..., "arguments": {...}}]`, read back by ForcedCallsParser.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pagoda_worker.engine.sampling_params import StructuredOutput
from pagoda_worker.server.errors import APIError
from pagoda_worker.server.protocol import ChatCompletionRequest, Tool
from pagoda_worker.server.structured import compiled, response_format_output
from pagoda_worker.server.tool_parsers import ForcedCallsParser, ToolCallParser

NO_ARGUMENTS = {"type": "object", "properties": {}, "additionalProperties": False}


@dataclass(frozen=True)
class ChatOutput:
    template_tools: list[dict] | None  # for the chat template; None keeps tools out
    structured_output: StructuredOutput | None
    parser: Callable[[], ToolCallParser] | None  # None: the completion is all content


def chat_output(
    request: ChatCompletionRequest, auto_parser: Callable[[], ToolCallParser]
) -> ChatOutput:
    tools = request.tools or []
    _check_tools(tools)
    choice = request.tool_choice or ("auto" if tools else "none")
    response_output = response_format_output(request.response_format)
    if choice == "none":
        return ChatOutput(None, response_output, None)
    template_tools = [tool.model_dump(exclude_none=True) for tool in tools]
    if choice == "auto":
        parser = None if response_output or not tools else auto_parser
        return ChatOutput(template_tools or None, response_output, parser)
    if not tools:
        raise APIError(400, "tool_choice: only allowed when tools are given", param="tool_choice")
    if response_output:
        raise APIError(
            400,
            "response_format and tool_choice cannot both shape the answer: a forced tool call is "
            "JSON already; drop response_format or set tool_choice to auto",
            param="response_format",
        )
    if choice == "required":
        calls = _calls_schema(tools, most=1 if request.parallel_tool_calls is False else None)
    else:
        calls = _calls_schema([_named(tools, choice.function.name)], most=1)
    return ChatOutput(template_tools, compiled(calls, "tools"), ForcedCallsParser)


def _check_tools(tools: list[Tool]) -> None:
    seen = set()
    for i, tool in enumerate(tools):
        name = tool.function.name
        if name in seen:
            param = f"tools[{i}].function.name"
            raise APIError(
                400, f"{param}: {name!r} names two tools; names must differ", param=param
            )
        seen.add(name)
        if tool.function.parameters is not None:
            compiled(tool.function.parameters, f"tools[{i}].function.parameters")


def _named(tools: list[Tool], name: str) -> Tool:
    for tool in tools:
        if tool.function.name == name:
            return tool
    param = "tool_choice.function.name"
    raise APIError(400, f"{param}: no tool is named {name!r}", param=param)


def _calls_schema(tools: list[Tool], most: int | None) -> dict:
    """A JSON array of at least one call, each {"name": one of the tools, "arguments": as that
    tool's parameters say}; at most `most` of them."""
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"const": tool.function.name},
                "arguments": _rebased(
                    tool.function.parameters or NO_ARGUMENTS,
                    f"#/items/anyOf/{i}/properties/arguments",
                ),
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for i, tool in enumerate(tools)
    ]
    schema = {"type": "array", "items": {"anyOf": options}, "minItems": 1}
    if most is not None:
        schema["maxItems"] = most
    return schema


def _rebased(schema, root: str):
    """A schema moved inside another: its local references ("#/$defs/X") now start at `root`."""
    if isinstance(schema, list):
        return [_rebased(item, root) for item in schema]
    if not isinstance(schema, dict):
        return schema
    moved = {key: _rebased(value, root) for key, value in schema.items()}
    ref = schema.get("$ref")
    if isinstance(ref, str) and (ref == "#" or ref.startswith("#/")):
        moved["$ref"] = root + ref[1:]
    return moved
