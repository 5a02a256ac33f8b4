"""A JSON schema the structured-output tests of the engine and of the server share: enums, bounds,
an array and a nested object, every string short enough for stories260K to close."""

from __future__ import annotations

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "color": {"enum": ["red", "green", "blue"]},
        "pets": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
        "home": {
            "type": "object",
            "properties": {"town": {"type": "string", "maxLength": 10}},
            "required": ["town"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "age", "color", "pets", "home"],
    "additionalProperties": False,
}
