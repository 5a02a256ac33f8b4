"""Turn pydantic's JSON Schema into a Kubernetes structural OpenAPI v3 schema.

Structural schemas have no $ref, no anyOf of types, and OpenAPI 3.0's boolean exclusive bounds.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

_DROPPED = {"title"}
_FIRST = ("type", "description")


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True)
    return _convert(schema, schema.get("$defs", {}))


def _convert(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    node = _resolve(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED or key == "$defs":
            continue
        if key == "default" and value is None:
            continue
        if key == "default":
            value = _without_nulls(value)  # an unset optional field is absent, not null
        if key == "description":
            value = " ".join(value.split())  # docstrings wrap; descriptions are one paragraph
        if key == "exclusiveMinimum":
            out.update(minimum=value, exclusiveMinimum=True)
        elif key == "exclusiveMaximum":
            out.update(maximum=value, exclusiveMaximum=True)
        elif key == "properties":
            out[key] = {name: _convert(prop, defs) for name, prop in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _convert(value, defs)
        else:
            out[key] = value
    if out.get("type") == "object" and not {"properties", "additionalProperties"} & out.keys():
        raise ValueError(f"object without a schema for its fields: {node}")
    return {**{k: out[k] for k in _FIRST if k in out}, **out}


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline a $ref and collapse `X | None` (the field is then simply optional)."""
    if "anyOf" in node:
        variants = [v for v in node["anyOf"] if v.get("type") != "null"]
        if len(variants) != 1:
            raise ValueError(f"a union of several types has no structural schema: {node}")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        node = {**_resolve(variants[0], defs), **rest}
    if "$ref" in node:
        target = defs[node["$ref"].removeprefix("#/$defs/")]
        rest = {k: v for k, v in node.items() if k != "$ref"}
        node = {**_resolve(target, defs), **rest}
    return node


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value
