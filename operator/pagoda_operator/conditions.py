"""Status conditions with stable transition times, and the transitions worth an Event."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .api.status import CONDITION_TYPES, MESSAGE_LIMIT, Condition
from .verdict import Verdict

# The status value of each condition that calls for attention (a Warning Event).
TROUBLE_WHEN = {
    "Ready": False,
    "UpToDate": None,  # False while a rollout runs is normal; the reasons below are not
    "Progressing": None,  # neither value is trouble in itself; its reason may be
    "Degraded": True,
    "FallbackActive": True,
    "QuotaExceeded": True,
    "RolledBack": True,
    "GatewayReady": False,
}
TROUBLE_REASONS = {
    "ProgressDeadlineExceeded",
    "CrashedDuringRollout",
    "FallbackWouldNotFit",
    "InvalidSpec",
}
# FallbackActive, but on the way back; GatewayReady False because there is none (by choice).
CALM_REASONS = {"DemotionPending", "NoGateway"}


@dataclass(frozen=True)
class Transition:
    """A condition changed status or reason: one Kubernetes Event."""

    type: str
    status: bool
    reason: str
    message: str

    @property
    def warning(self) -> bool:
        if self.reason in CALM_REASONS:
            return False
        return TROUBLE_WHEN[self.type] is self.status or trouble_reason(self.reason)


def trouble_reason(reason: str) -> bool:
    """Reasons that call for attention whatever the status (a refused child is <Kind>Rejected)."""
    return reason in TROUBLE_REASONS or reason.endswith("Rejected")


def merge_conditions(
    previous: list[Condition], verdicts: dict[str, Verdict], generation: int, now: datetime
) -> list[Condition]:
    """New conditions in CONDITION_TYPES order; a condition keeps its lastTransitionTime while
    its status stays the same."""
    before = {c.type: c for c in previous}
    merged = []
    for kind in CONDITION_TYPES:
        verdict = verdicts[kind]
        status = "True" if verdict.status else "False"
        old = before.get(kind)
        since = old.last_transition_time if old is not None and old.status == status else now
        merged.append(
            Condition(
                type=kind,
                status=status,
                reason=verdict.reason,
                message=_fit(verdict.message),
                last_transition_time=since,
                observed_generation=generation,
            )
        )
    return merged


def _fit(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """Messages quote the apiserver, whose answers can outgrow the status schema's bound."""
    return message if len(message) <= limit else message[: limit - 1] + "…"


def transitions(previous: list[Condition], current: list[Condition]) -> list[Transition]:
    """Changes of status or reason. A condition seen for the first time counts only when True
    or troubling: a new LLMDeployment should not announce six non-events."""
    before = {c.type: c for c in previous}
    found = []
    for condition in current:
        old = before.get(condition.type)
        if old is None:
            changed = condition.status == "True" or trouble_reason(condition.reason)
        else:
            changed = (old.status, old.reason) != (condition.status, condition.reason)
        if changed:
            found.append(
                Transition(
                    condition.type,
                    condition.status == "True",
                    condition.reason,
                    condition.message,
                )
            )
    return found
