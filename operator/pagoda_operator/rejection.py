"""A child object the apiserver refused to apply, and how status says so: the reconcile cannot
finish, so the LLMDeployment is neither ready nor up to date until the spec is fixed."""

from __future__ import annotations

from dataclasses import dataclass

from .verdict import Verdict


@dataclass(frozen=True)
class Rejection:
    kind: str
    name: str
    message: str  # the apiserver's

    @property
    def reason(self) -> str:
        return f"{self.kind}Rejected"


def rejected_verdict(rejections: tuple[Rejection, ...], serving: str) -> Verdict:
    """`serving`: what still serves meanwhile, in words (the pods of earlier revisions)."""
    first = rejections[0]
    refused = "; ".join(
        f"{r.kind} {r.name} was rejected by the apiserver: {r.message}" for r in rejections
    )
    return Verdict(
        False, first.reason, f"{refused}. Fix the spec and apply it again; meanwhile {serving}"
    )
