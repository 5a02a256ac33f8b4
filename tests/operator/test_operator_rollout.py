"""Rollout decisions: which revision runs, when a rollout is rolled back, what status says, and
the facts remembered on the revision ConfigMaps."""

from __future__ import annotations

from datetime import timedelta

import pytest
from operator_world import PVC_SOURCE, T0, deployment
from pagoda_operator.api.spec import LLMDeploymentSpec, RolloutSpec
from pagoda_operator.observed import DeploymentState
from pagoda_operator.records import RevisionRecord, Rollback
from pagoda_operator.revision import primary_config
from pagoda_operator.rollout import RevisionTrouble, decide_rollout
from pagoda_operator.strategy import Strategy

ROLLOUT = RolloutSpec(progress_deadline_seconds=600, min_ready_seconds=30)
CRASH = RevisionTrouble(crashed="container worker of pod p restarted 1 time (last: Error)")
STUCK = RevisionTrouble(worst="pod p cannot pull the image")
FINE = RevisionTrouble()


def config(model: str):
    spec = LLMDeploymentSpec.model_validate(
        {"model": {"name": model, "source": PVC_SOURCE}, "replicas": 2}
    )
    return primary_config(spec)


OLD, NEW = config("old"), config("new")
REV = {"old": OLD.revision, "new": NEW.revision, None: None}
EARLIER, LATER = T0 - timedelta(hours=2), T0 - timedelta(hours=1)


def state(revision: str, **kwargs) -> DeploymentState:
    return DeploymentState.from_object(deployment(revision=REV[revision], **kwargs))


def records(old_ready=False, new_ready=False, new_rolled_back=False, old_stored=True):
    """The ConfigMaps as read back: `old` exists (unless old_stored is False), `new` may not."""
    found = {}
    if old_stored:
        found[REV["old"]] = RevisionRecord(OLD, EARLIER if old_ready else None)
    if new_ready or new_rolled_back:
        rollback = Rollback("ProgressDeadlineExceeded", "it stalled") if new_rolled_back else None
        found[REV["new"]] = RevisionRecord(NEW, LATER if new_ready else None, rollback)
    return found


def decide(found, observed, trouble=FINE, now=T0, ready_since=None, rollout=ROLLOUT):
    return decide_rollout(
        NEW, found, observed, trouble, ready_since or {}, rollout, Strategy(1, 0), "", now
    )


# The spec asks for revision "new"; "old" is what ran before. Expected: (render, last ready,
# rolled back from), then the Progressing, RolledBack and UpToDate conditions.
@pytest.mark.parametrize(
    ("case", "found", "observed", "trouble", "expected", "progressing", "rolled_back", "current"),
    [
        ("first apply: nothing exists yet",
         {}, None, RevisionTrouble(),
         ("new", None, None), ("True", "RollingUpdate"), ("False", "NoRollback"),
         ("False", "RollingOut")),
        ("first revision rolled out and baked: it becomes last ready",
         records(old_stored=False), state("new"), RevisionTrouble(),
         ("new", "new", None), ("False", "RolloutComplete"), ("False", "NoRollback"),
         ("True", "UpToDate")),
        ("ready but not yet available (baking): not ready yet",
         records(old_ready=True), state("new", available=1), RevisionTrouble(),
         ("new", "old", None), ("True", "RollingUpdate"), ("False", "NoRollback"),
         ("False", "RollingOut")),
        ("a revision that became ready loses pods later: not a rollout (see Degraded)",
         records(new_ready=True), state("new", ready=0), CRASH,
         ("new", "new", None), ("False", "RolloutComplete"), ("False", "NoRollback"),
         ("True", "UpToDate")),
        ("spec changed: roll towards the new revision, keep the old one as last ready",
         records(old_ready=True), state("old"), RevisionTrouble(),
         ("new", "old", None), ("True", "RollingUpdate"), ("False", "NoRollback"),
         ("False", "RollingOut")),
        ("the new revision missed its deadline: roll back to the last ready one",
         records(old_ready=True), state("new", updated=1, replicas=3, deadline_exceeded=True),
         STUCK,
         ("old", "old", "new"), ("True", "RollingUpdate"), ("True", "ProgressDeadlineExceeded"),
         ("False", "RolledBack")),
        ("a new pod crashed while baking: roll back at once",
         records(old_ready=True), state("new", updated=1, replicas=3, available=2), CRASH,
         ("old", "old", "new"), ("True", "RollingUpdate"), ("True", "CrashedDuringRollout"),
         ("False", "RolledBack")),
        ("rolling back, the Deployment has taken the old template",
         records(old_ready=True, new_rolled_back=True), state("old", replicas=3),
         RevisionTrouble(),
         ("old", "old", "new"), ("True", "RollingUpdate"), ("True", "ProgressDeadlineExceeded"),
         ("False", "RolledBack")),
        ("rollback finished: it stays rolled back while the spec is unchanged",
         records(old_ready=True, new_rolled_back=True), state("old"), RevisionTrouble(),
         ("old", "old", "new"), ("False", "RolledBack"), ("True", "ProgressDeadlineExceeded"),
         ("False", "RolledBack")),
        ("a stale deadline before the controller saw the new template is ignored",
         records(old_ready=True), state("new", synced=False, deadline_exceeded=True),
         RevisionTrouble(),
         ("new", "old", None), ("True", "RollingUpdate"), ("False", "NoRollback"),
         ("False", "RollingOut")),
        ("deadline missed with nothing ready before: nothing to roll back to",
         records(), state("new", ready=0, deadline_exceeded=True), STUCK,
         ("new", None, None), ("False", "ProgressDeadlineExceeded"), ("False", "NoRollback"),
         ("False", "ProgressDeadlineExceeded")),
    ],
)  # fmt: skip
def test_decide_rollout(case, found, observed, trouble, expected, progressing, rolled_back,
                        current):  # fmt: skip
    decision = decide(found, observed, trouble)
    render, last_ready, rolled_back_from = (REV[name] for name in expected)
    assert decision.render.revision == render, case
    assert decision.revisions.desired == REV["new"]
    assert decision.revisions.current == render
    assert decision.revisions.last_ready == last_ready, case
    assert decision.revisions.rolled_back_from == rolled_back_from, case
    assert (str(decision.progressing.status), decision.progressing.reason) == progressing, case
    assert (str(decision.rolled_back.status), decision.rolled_back.reason) == rolled_back, case
    assert (str(decision.up_to_date.status), decision.up_to_date.reason) == current, case


def test_becoming_ready_and_rolling_back_are_recorded_for_the_config_maps():
    baked = decide(records(old_stored=False), state("new"))
    assert baked.records[REV["new"]].ready_at == T0
    again = decide(baked.records, state("new"), now=T0 + timedelta(minutes=5))
    assert again.records[REV["new"]].ready_at == T0, "recorded once, not on every pass"

    crashed = decide(records(old_ready=True), state("new", available=1), CRASH)
    rollback = crashed.records[REV["new"]].rollback
    assert rollback.reason == "CrashedDuringRollout"
    assert CRASH.crashed in rollback.message and "minReadySeconds (30s)" in rollback.message
    assert crashed.records[REV["new"]].annotations()["pagoda.dev/rollback-reason"] == (
        "CrashedDuringRollout"
    )


def test_a_revision_scaled_to_zero_never_became_ready():
    decision = decide(records(old_ready=True), state("new", wanted=0, ready=0))
    assert decision.revisions.last_ready == REV["old"]


def test_a_crash_of_a_revision_that_was_ready_is_not_rolled_back():
    decision = decide(records(old_ready=True, new_ready=True), state("new", ready=1), CRASH)
    assert decision.revisions.rolled_back_from is None
    assert decision.records[REV["new"]].rollback is None


@pytest.mark.parametrize(
    ("case", "found", "says"),
    [
        ("nothing ever became ready", records(), "no earlier revision became ready"),
        ("a scale-up of the last ready revision stalls", records(new_ready=True),
         "it is the last revision that became ready"),
    ],
)  # fmt: skip
def test_a_stall_without_rollback_says_why(case, found, says):
    observed = state("new", wanted=3, replicas=3, updated=3, ready=2, deadline_exceeded=True)
    decision = decide(found, observed, STUCK)
    assert decision.revisions.rolled_back_from is None, case
    assert (decision.progressing.status, decision.progressing.reason) == (
        False,
        "ProgressDeadlineExceeded",
    ), case
    assert says in decision.progressing.message, (case, decision.progressing.message)
    assert STUCK.worst in decision.progressing.message


def test_a_new_spec_after_a_rollback_is_rolled_out():
    newer = config("newer")
    found = records(old_ready=True, new_rolled_back=True)
    decision = decide_rollout(newer, found, state("old"), RevisionTrouble(), {}, ROLLOUT,
                              Strategy(1, 0), "", T0)  # fmt: skip
    assert decision.render == newer
    assert decision.revisions.rolled_back_from is None
    assert (decision.rolled_back.status, decision.rolled_back.reason) == (False, "NoRollback")


def test_rollback_message_says_why_and_names_both_revisions():
    observed = state("new", updated=1, replicas=3, deadline_exceeded=True)
    decision = decide(records(old_ready=True), observed, STUCK)
    message = decision.rolled_back.message
    assert REV["new"] in message and REV["old"] in message and "600s" in message
    assert STUCK.worst in message, "the reason outlives the failing pods"
    assert "Degraded" not in message


def test_progress_message_says_when_rolling_without_surge():
    observed = state("new", updated=1, replicas=2, ready=1)
    note = "rolling without surge: quota"
    decision = decide_rollout(NEW, {}, observed, RevisionTrouble(), {}, ROLLOUT,
                              Strategy(0, 1), note, T0)  # fmt: skip
    assert "maxSurge 0, maxUnavailable 1" in decision.progressing.message
    assert note in decision.progressing.message


def test_one_pod_is_not_pods():
    decision = decide(records(old_stored=False), state("new", wanted=1, ready=1))
    assert decision.progressing.message.endswith("rolled out to 1 pod")


# The spec moved on from "old" to "new" during old's 2 s bake: old's pods keep serving (the
# Deployment keeps them while new's are not available), new's first pod is rolling out.
BAKE = RolloutSpec(progress_deadline_seconds=600, min_ready_seconds=2)
ROLLING = state("new", updated=1, replicas=3, available=2)


def ago(seconds: int):
    return T0 - timedelta(seconds=seconds)


def test_a_revision_replaced_during_its_bake_becomes_ready_once_its_pods_baked():
    decision = decide(records(), ROLLING, CRASH, ready_since={REV["old"]: ago(3)}, rollout=BAKE)
    assert decision.records[REV["old"]].ready_at == ago(1), "when its pods had baked"
    assert decision.revisions.last_ready == REV["old"]
    assert decision.revisions.rolled_back_from == REV["new"]
    assert decision.render == OLD
    assert (decision.rolled_back.status, decision.rolled_back.reason) == (
        True,
        "CrashedDuringRollout",
    )
    assert decision.wake_at is None


def test_pods_ready_for_part_of_the_bake_do_not_make_a_revision_ready():
    decision = decide(records(), ROLLING, CRASH, ready_since={REV["old"]: ago(1)}, rollout=BAKE)
    assert decision.records[REV["old"]].ready_at is None
    assert decision.revisions.last_ready is None
    assert (decision.rolled_back.status, decision.rolled_back.reason) == (False, "NoRollback")
    assert decision.wake_at == T0 + timedelta(seconds=1), "looked at again when the bake ends"


@pytest.mark.parametrize(
    ("case", "found", "observed", "ready_since", "last_ready"),
    [
        ("the running revision's pods: only the Deployment's completion counts",
         records(old_ready=True), state("new", available=1), {"new": ago(60)}, "old"),
        ("a rolled-back revision never becomes ready",
         records(old_ready=True, new_rolled_back=True), state("old", replicas=3),
         {"new": ago(60)}, "old"),
        ("a revision without its ConfigMap cannot be returned to",
         records(old_stored=False), ROLLING, {"old": ago(60)}, None),
        ("a revision that became ready keeps its time",
         records(old_ready=True), ROLLING, {"old": EARLIER - timedelta(minutes=1)}, "old"),
    ],
)  # fmt: skip
def test_which_earlier_pods_make_a_revision_ready(case, found, observed, ready_since, last_ready):
    since = {REV[name]: moment for name, moment in ready_since.items()}
    decision = decide(found, observed, ready_since=since, rollout=BAKE)
    assert decision.revisions.last_ready == REV[last_ready], case
    assert all(decision.records[r] == record for r, record in found.items()), case


def test_the_newest_revision_whose_pods_baked_wins():
    older = config("older")
    found = records() | {older.revision: RevisionRecord(older)}
    since = {older.revision: ago(30), REV["old"]: ago(10)}
    decision = decide(found, ROLLING, ready_since=since, rollout=BAKE)
    assert decision.revisions.last_ready == REV["old"]
    assert decision.records[older.revision].ready_at == ago(28)


def test_a_revision_ready_once_before_whose_new_pods_baked_is_the_newest_again():
    """old became ready, then older did; the spec went back to old and on to new during old's
    bake: old, not older, is what last worked."""
    older = config("older")
    found = records(old_ready=True) | {older.revision: RevisionRecord(older, LATER)}
    decision = decide(found, ROLLING, ready_since={REV["old"]: ago(60)}, rollout=BAKE)
    assert decision.revisions.last_ready == REV["old"]
    assert decision.records[REV["old"]].ready_at == ago(58)
