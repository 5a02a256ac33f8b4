"""What every API model shares: camelCase aliases, docstrings as descriptions, CEL rules."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


def cel(rule: str, message: str, field_path: str | None = None) -> dict:
    """One CEL rule with a fixed message (messageExpression string building exceeds the
    apiserver's CEL cost budget)."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def validations(*rules: dict) -> dict:
    return {"x-kubernetes-validations": list(rules)}


class ApiModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        frozen=True,
    )


def first_repeated(names: Iterable[str]) -> str | None:
    """The first name that appears a second time (list maps keyed by name allow each once)."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None
