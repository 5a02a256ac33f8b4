"""Rollout decisions: which revision runs, when a rollout is rolled back, what status says."""

from __future__ import annotations

import pytest
from operator_world import PVC_SOURCE, deployment
from pagoda_operator.api.spec import LLMDeploymentSpec
from pagoda_operator.api.status import Revisions
from pagoda_operator.observed import DeploymentState
from pagoda_operator.revision import primary_config
from pagoda_operator.rollout import decide_rollout
from pagoda_operator.workload import Strategy


def config(model: str):
    spec = LLMDeploymentSpec.model_validate(
        {"model": {"name": model, "source": PVC_SOURCE}, "replicas": 2}
    )
    return primary_config(spec)


OLD, NEW = config("old"), config("new")
REV = {"old": OLD.revision, "new": NEW.revision, None: None}


def state(revision: str, **kwargs) -> DeploymentState:
    return DeploymentState.from_object(deployment(revision=REV[revision], **kwargs))


def revisions(current=None, last_ready=None, rolled_back_from=None) -> Revisions:
    return Revisions(
        desired=REV["new"],
        current=REV[current],
        last_ready=REV[last_ready],
        rolled_back_from=REV[rolled_back_from],
    )


# The spec asks for revision "new"; "old" is what ran before. `stored`: whether the ConfigMap
# recording the last ready revision can be read. Expected: (render, last ready, rolled back
# from), then the Progressing and RolledBack conditions.
@pytest.mark.parametrize(
    ("case", "previous", "observed", "stored", "expected", "progressing", "rolled_back"),
    [
        ("first apply: nothing exists yet",
         revisions(), None, False,
         ("new", None, None), ("True", "RollingUpdate"), ("False", "NoRollback")),
        ("first revision rolled out completely: it becomes last ready",
         revisions("new"), state("new"), False,
         ("new", "new", None), ("False", "RolloutComplete"), ("False", "NoRollback")),
        ("a revision that became ready loses pods later: not a rollout (see Degraded)",
         revisions("new", "new"), state("new", ready=0), False,
         ("new", "new", None), ("False", "RolloutComplete"), ("False", "NoRollback")),
        ("spec changed: roll towards the new revision, keep the old one as last ready",
         revisions("old", "old"), state("old"), True,
         ("new", "old", None), ("True", "RollingUpdate"), ("False", "NoRollback")),
        ("mid-rollout, step by step",
         revisions("new", "old"), state("new", updated=1, replicas=3), True,
         ("new", "old", None), ("True", "RollingUpdate"), ("False", "NoRollback")),
        ("the new revision missed its deadline: roll back to the last ready one",
         revisions("new", "old"), state("new", updated=1, replicas=3, deadline_exceeded=True),
         True,
         ("old", "old", "new"), ("True", "RollingUpdate"), ("True", "ProgressDeadlineExceeded")),
        ("rolling back, the Deployment has taken the old template",
         revisions("old", "old", "new"), state("old", replicas=3), True,
         ("old", "old", "new"), ("True", "RollingUpdate"), ("True", "ProgressDeadlineExceeded")),
        ("rollback finished: it stays rolled back while the spec is unchanged",
         revisions("old", "old", "new"), state("old"), True,
         ("old", "old", "new"), ("False", "RolledBack"), ("True", "ProgressDeadlineExceeded")),
        ("a stale deadline before the controller saw the new template is ignored",
         revisions("new", "old"), state("new", synced=False, deadline_exceeded=True), True,
         ("new", "old", None), ("True", "RollingUpdate"), ("False", "NoRollback")),
        ("deadline missed with nothing ready before: nothing to roll back to",
         revisions("new"), state("new", ready=0, deadline_exceeded=True), False,
         ("new", None, None), ("False", "ProgressDeadlineExceeded"), ("False", "NoRollback")),
        ("last ready revision's ConfigMap is gone: cannot roll back",
         revisions("new", "old"), state("new", ready=1, deadline_exceeded=True), False,
         ("new", "old", None), ("False", "ProgressDeadlineExceeded"), ("False", "NoRollback")),
    ],
)  # fmt: skip
def test_decide_rollout(case, previous, observed, stored, expected, progressing, rolled_back):
    decision = decide_rollout(
        NEW, previous, observed, OLD if stored else None, 600, Strategy(1, 0), ""
    )
    render, last_ready, rolled_back_from = (REV[name] for name in expected)
    assert decision.render.revision == render, case
    assert decision.revisions.desired == REV["new"]
    assert decision.revisions.current == render
    assert decision.revisions.last_ready == last_ready, case
    assert decision.revisions.rolled_back_from == rolled_back_from, case
    assert (str(decision.progressing.status), decision.progressing.reason) == progressing, case
    assert (str(decision.rolled_back.status), decision.rolled_back.reason) == rolled_back, case


def test_a_revision_scaled_to_zero_never_became_ready():
    decision = decide_rollout(
        NEW, revisions("new", "old"), state("new", wanted=0, ready=0), OLD, 600, Strategy(1, 0), ""
    )
    assert decision.revisions.last_ready == REV["old"]


@pytest.mark.parametrize(
    ("case", "previous", "stored", "says"),
    [
        ("nothing ever became ready", revisions("new"), False, "no earlier revision became ready"),
        ("a scale-up of the last ready revision stalls", revisions("new", "new"), True,
         "it is the last revision that became ready"),
        ("the last ready revision's ConfigMap is gone", revisions("new", "old"), False,
         f"the ConfigMap of revision {REV['old']}, the last that became ready, is gone"),
    ],
)  # fmt: skip
def test_a_stall_without_rollback_says_why(case, previous, stored, says):
    observed = state("new", wanted=3, replicas=3, updated=3, ready=2, deadline_exceeded=True)
    decision = decide_rollout(NEW, previous, observed, OLD if stored else None, 600,
                              Strategy(1, 0), "")  # fmt: skip
    assert decision.revisions.rolled_back_from is None, case
    assert (decision.progressing.status, decision.progressing.reason) == (
        False,
        "ProgressDeadlineExceeded",
    ), case
    assert says in decision.progressing.message, (case, decision.progressing.message)


def test_a_new_spec_after_a_rollback_is_rolled_out():
    newer = config("newer")
    previous = revisions("old", "old", "new")
    decision = decide_rollout(newer, previous, state("old"), OLD, 600, Strategy(1, 0), "")
    assert decision.render == newer
    assert decision.revisions.rolled_back_from is None
    assert (decision.rolled_back.status, decision.rolled_back.reason) == (False, "NoRollback")
    assert "the spec changed after a rollback" in decision.rolled_back.message


def test_rollback_message_names_both_revisions_and_the_deadline():
    observed = state("new", updated=1, replicas=3, deadline_exceeded=True)
    decision = decide_rollout(NEW, revisions("new", "old"), observed, OLD, 600, Strategy(1, 0), "")
    message = decision.rolled_back.message
    assert REV["new"] in message and REV["old"] in message and "600s" in message


def test_progress_message_says_when_rolling_without_surge():
    observed = state("new", updated=1, replicas=2, ready=1)
    note = "rolling without surge: quota"
    decision = decide_rollout(NEW, Revisions(), observed, None, 600, Strategy(0, 1), note)
    assert "maxSurge 0, maxUnavailable 1" in decision.progressing.message
    assert note in decision.progressing.message
