"""Which revision the primary Deployment runs: the spec's, or, after the spec's missed its
progress deadline, the last one that became ready."""

from __future__ import annotations

from dataclasses import dataclass

from .api.status import Revisions
from .observed import DeploymentState
from .revision import TierConfig
from .verdict import Verdict
from .workload import Strategy


@dataclass(frozen=True)
class RolloutDecision:
    render: TierConfig  # what the primary Deployment's pod template is built from
    revisions: Revisions
    progressing: Verdict
    rolled_back: Verdict


def decide_rollout(
    desired: TierConfig,
    previous: Revisions,
    deployment: DeploymentState | None,
    last_ready_config: TierConfig | None,
    deadline_seconds: int,
    strategy: Strategy,
    surge_note: str,
) -> RolloutDecision:
    """`last_ready_config`: the stored TierConfig of `previous.last_ready`, if it can be read."""
    wanted = desired.revision
    running = deployment.revision if deployment else None
    last_ready = previous.last_ready
    # A Deployment scaled to zero is complete without any pod having become ready.
    if deployment is not None and deployment.complete and deployment.wanted and running:
        last_ready = running
    # A rollback lasts until the spec asks for another revision.
    rolled_back_from = previous.rolled_back_from if previous.rolled_back_from == wanted else None
    stalled = (
        deployment is not None
        and deployment.synced
        and deployment.deadline_exceeded
        and running == wanted
    )
    can_return = (
        last_ready is not None
        and last_ready != wanted
        and last_ready_config is not None
        and last_ready_config.revision == last_ready
    )
    if stalled and rolled_back_from is None and can_return:
        rolled_back_from = wanted
    render = last_ready_config if rolled_back_from and last_ready_config else desired
    revisions = Revisions(
        desired=wanted,
        current=render.revision,
        last_ready=last_ready,
        rolled_back_from=rolled_back_from,
    )

    if rolled_back_from:
        rolled_back = Verdict(
            True,
            "ProgressDeadlineExceeded",
            f"revision {wanted} did not become ready within rollout.progressDeadlineSeconds"
            f" ({deadline_seconds}s), so the primary went back to revision {render.revision}, the"
            " last one that became ready; see Degraded for why, fix the spec and apply it again",
        )
    elif previous.rolled_back_from:
        rolled_back = Verdict(
            False, "NoRollback", f"the spec changed after a rollback; revision {wanted} is next"
        )
    else:
        rolled_back = Verdict(False, "NoRollback", "no rollout has been rolled back")

    progressing = _progress(
        render, deployment, running, last_ready, strategy, surge_note, deadline_seconds
    )
    if rolled_back_from and progressing.reason == "RolloutComplete":
        progressing = Verdict(
            False, "RolledBack", f"running revision {render.revision} again after a rollback"
        )
    elif stalled and not rolled_back_from:
        progressing = Verdict(
            False,
            "ProgressDeadlineExceeded",
            f"revision {wanted} made no progress for {deadline_seconds}s and"
            f" {_why_no_rollback(wanted, last_ready)}; see Degraded for why",
        )
    return RolloutDecision(render, revisions, progressing, rolled_back)


def _why_no_rollback(wanted: str, last_ready: str | None) -> str:
    if last_ready is None:
        return "no earlier revision became ready, so there is nothing to roll back to"
    if last_ready == wanted:
        return "it is the last revision that became ready: its new pods (e.g. of a scale-up) fail"
    return f"the ConfigMap of revision {last_ready}, the last that became ready, is gone"


def _progress(
    render: TierConfig,
    deployment: DeploymentState | None,
    running: str | None,
    last_ready: str | None,
    strategy: Strategy,
    surge_note: str,
    deadline_seconds: int,
) -> Verdict:
    target = render.revision
    if deployment is None or running != target or not deployment.synced:
        return Verdict(True, "RollingUpdate", f"rolling out revision {target}")
    # Once a revision has become ready, pods of it that fail later are Degraded, not a rollout.
    replaced = deployment.updated == deployment.replicas == deployment.wanted
    if deployment.complete or (target == last_ready and replaced):
        return Verdict(
            False, "RolloutComplete", f"revision {target} is rolled out to {deployment.wanted} pods"
        )
    message = (
        f"rolling out revision {target}: {deployment.updated}/{deployment.wanted} pods updated,"
        f" {deployment.ready} ready, {deployment.replicas} in all (maxSurge"
        f" {strategy.max_surge}, maxUnavailable {strategy.max_unavailable}; rolled back if no"
        f" progress for {deadline_seconds}s)"
    )
    return Verdict(True, "RollingUpdate", f"{message}; {surge_note}" if surge_note else message)
