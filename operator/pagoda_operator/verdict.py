"""A condition's value before it gets a timestamp: what the pure decisions return."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Verdict:
    status: bool
    reason: str
    message: str


def count(number: int, noun: str) -> str:
    """ "1 pod", "2 pods": messages never say "1 pods"."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def stamp(moment: datetime) -> str:
    """Times in messages: UTC, whole seconds, so recomputing a message never changes it."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
