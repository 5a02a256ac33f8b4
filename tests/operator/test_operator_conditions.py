"""Condition bookkeeping: stable transition times, and which changes become Events."""

from __future__ import annotations

from datetime import timedelta

from operator_world import T0
from pagoda_operator.api.status import CONDITION_TYPES
from pagoda_operator.conditions import merge_conditions, transitions
from pagoda_operator.verdict import Verdict

LATER = T0 + timedelta(minutes=5)


def verdicts(**changes: Verdict) -> dict[str, Verdict]:
    base = {kind: Verdict(False, "Quiet", f"{kind} quiet") for kind in CONDITION_TYPES}
    return base | changes


def test_all_conditions_are_always_present_in_a_fixed_order():
    merged = merge_conditions([], verdicts(), 4, T0)
    assert [c.type for c in merged] == list(CONDITION_TYPES)
    assert all(c.observed_generation == 4 for c in merged)


def test_transition_time_moves_only_when_status_changes():
    first = merge_conditions([], verdicts(), 1, T0)
    same_status_new_reason = merge_conditions(
        first, verdicts(Degraded=Verdict(False, "Other", "x")), 1, LATER
    )
    degraded = next(c for c in same_status_new_reason if c.type == "Degraded")
    assert degraded.last_transition_time == T0
    flipped = merge_conditions(first, verdicts(Degraded=Verdict(True, "OOMKilled", "y")), 1, LATER)
    degraded = next(c for c in flipped if c.type == "Degraded")
    assert degraded.last_transition_time == LATER


def test_transitions_are_status_or_reason_changes_only():
    first = merge_conditions([], verdicts(), 1, T0)
    assert transitions([], first) == [], "a new object announces nothing that is False"
    message_only = merge_conditions(first, verdicts(Ready=Verdict(False, "Quiet", "new")), 1, LATER)
    assert transitions(first, message_only) == []
    promoted = merge_conditions(
        first, verdicts(FallbackActive=Verdict(True, "PrimaryUnavailable", "why")), 1, LATER
    )
    [event] = transitions(first, promoted)
    assert (event.type, event.status, event.reason, event.message) == (
        "FallbackActive",
        True,
        "PrimaryUnavailable",
        "why",
    )
    assert event.warning


def test_warning_or_normal():
    def kind(condition: str, status: bool, reason: str = "R") -> str:
        current = merge_conditions([], verdicts(**{condition: Verdict(status, reason, "m")}), 1, T0)
        before = merge_conditions([], verdicts(**{condition: Verdict(not status, "X", "m")}), 1, T0)
        [event] = transitions(before, current)
        return "Warning" if event.warning else "Normal"

    assert kind("Ready", False) == "Warning"
    assert kind("Ready", True) == "Normal"
    assert kind("Degraded", True) == "Warning"
    assert kind("Degraded", False) == "Normal"
    assert kind("QuotaExceeded", True) == "Warning"
    assert kind("RolledBack", True) == "Warning"
    assert kind("FallbackActive", False) == "Normal"
    assert kind("FallbackActive", True, "PrimaryUnavailable") == "Warning"
    assert kind("FallbackActive", True, "DemotionPending") == "Normal", "recovering is not trouble"
    assert kind("Progressing", True) == "Normal"
    assert kind("Progressing", False, "ProgressDeadlineExceeded") == "Warning"


def test_a_long_apiserver_answer_is_cut_to_fit_the_status_schema():
    verdicts = {kind: Verdict(False, "Why", "x" * 10_000) for kind in CONDITION_TYPES}
    merged = merge_conditions([], verdicts, 1, T0)
    assert all(len(c.message) == 4096 and c.message.endswith("…") for c in merged)
