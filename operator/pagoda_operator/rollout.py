"""Which revision the primary Deployment runs: the spec's, or, after the spec's missed its
progress deadline or crashed before it became ready, the last one that became ready.

A revision becomes ready when the Deployment completes with it, or, when the spec moved on
during its bake, once all its pods that are left have stayed ready for minReadySeconds."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from .api.spec import RolloutSpec
from .api.status import Revisions
from .api.tier_config import TierConfig
from .observed import DeploymentState
from .records import RevisionRecord, Rollback, last_ready
from .strategy import Strategy
from .verdict import Verdict, count


@dataclass(frozen=True)
class RolloutDecision:
    render: TierConfig  # what the primary Deployment's pod template is built from
    records: dict[str, RevisionRecord]  # updated facts, to write back on the ConfigMaps
    revisions: Revisions
    progressing: Verdict
    rolled_back: Verdict
    up_to_date: Verdict
    wake_at: datetime | None  # when an earlier revision's pods will have baked


@dataclass(frozen=True)
class RevisionTrouble:
    """What the desired revision's pods show, when it has not become ready yet."""

    crashed: str | None = None  # a pod of it restarted: why, in words
    worst: str | None = None  # its pods' worst problem, for a stall's message


def decide_rollout(
    desired: TierConfig,
    records: dict[str, RevisionRecord],
    deployment: DeploymentState | None,
    trouble: RevisionTrouble,
    ready_since: dict[str, datetime],
    rollout: RolloutSpec,
    strategy: Strategy,
    surge_note: str,
    now: datetime,
) -> RolloutDecision:
    """`ready_since`: for each primary revision whose pods are all ready and never restarted,
    since when the last of them is ready."""
    wanted = desired.revision
    records = {**records, wanted: records.get(wanted) or RevisionRecord(desired)}
    running = deployment.revision if deployment else None
    bakes = _earlier_bakes(records, ready_since, running, rollout.min_ready_seconds)
    for revision, baked in bakes.items():
        ready_at = records[revision].ready_at
        if baked <= now and (ready_at is None or ready_at < baked):
            records[revision] = replace(records[revision], ready_at=baked)
    # Complete means every pod stayed ready for minReadySeconds (the Deployment's availability).
    # A Deployment scaled to zero is complete without any pod having become ready.
    complete = deployment is not None and deployment.complete and deployment.wanted
    if complete and running in records and last_ready(records) != running:
        records[running] = replace(records[running], ready_at=now)
    ready = last_ready(records)
    can_return = ready is not None and ready != wanted
    stalled = (
        deployment is not None
        and deployment.synced
        and deployment.deadline_exceeded
        and running == wanted
    )
    rollback = records[wanted].rollback  # lasts until the spec asks for another revision
    if rollback is None and can_return and running == wanted:
        rollback = _decide_rollback(wanted, trouble, stalled, rollout)
        if rollback is not None:
            records[wanted] = replace(records[wanted], rollback=rollback)
    rolled_back = rollback is not None and can_return
    if rolled_back:
        assert rollback is not None and ready is not None  # what rolled_back says
        render = records[ready].config
        rolled_back_verdict = Verdict(
            True,
            rollback.reason,
            f"{rollback.message}; the primary went back to revision {render.revision}, the last"
            " one that became ready. Fix the spec and apply it again",
        )
    else:
        render = desired
        rolled_back_verdict = Verdict(False, "NoRollback", "no rollout has been rolled back")
    revisions = Revisions(
        desired=wanted,
        current=render.revision,
        last_ready=ready,
        rolled_back_from=wanted if rolled_back else None,
    )

    progressing = _progress(
        render, deployment, running, ready, strategy, surge_note, rollout.progress_deadline_seconds
    )
    if rolled_back and progressing.reason == "RolloutComplete":
        progressing = Verdict(
            False, "RolledBack", f"running revision {render.revision} again after a rollback"
        )
    elif stalled and not rolled_back:
        progressing = Verdict(
            False,
            "ProgressDeadlineExceeded",
            f"revision {wanted} made no progress for {rollout.progress_deadline_seconds}s and"
            f" {_why_no_rollback(ready)}: {trouble.worst or 'its pods are not ready'}",
        )
    return RolloutDecision(
        render,
        records,
        revisions,
        progressing,
        rolled_back_verdict,
        _up_to_date(wanted, render, rollback if rolled_back else None, progressing),
        min((baked for baked in bakes.values() if baked > now), default=None),
    )


def _earlier_bakes(
    records: dict[str, RevisionRecord],
    ready_since: dict[str, datetime],
    running: str | None,
    min_ready_seconds: int,
) -> dict[str, datetime]:
    """When the pods of revisions the Deployment no longer rolls out (the spec changed during
    their bake; maxUnavailable keeps old pods serving) will have stayed ready for
    minReadySeconds, as the Deployment's availability counts it. A rolled-back revision never
    qualifies; one without a ConfigMap could not be rendered again."""
    window = timedelta(seconds=min_ready_seconds)
    return {
        revision: since + window
        for revision, since in ready_since.items()
        if revision != running and revision in records and records[revision].rollback is None
    }


def _decide_rollback(
    wanted: str, trouble: RevisionTrouble, stalled: bool, rollout: RolloutSpec
) -> Rollback | None:
    if trouble.crashed:
        return Rollback(
            "CrashedDuringRollout",
            f"revision {wanted} crashed before all its pods had stayed ready for"
            f" rollout.minReadySeconds ({rollout.min_ready_seconds}s): {trouble.crashed}",
        )
    if stalled:
        why = trouble.worst or "its pods did not get ready"
        return Rollback(
            "ProgressDeadlineExceeded",
            f"revision {wanted} did not become ready within rollout.progressDeadlineSeconds"
            f" ({rollout.progress_deadline_seconds}s): {why}",
        )
    return None


def _up_to_date(
    wanted: str, render: TierConfig, rollback: Rollback | None, progressing: Verdict
) -> Verdict:
    if rollback is not None:
        return Verdict(
            False,
            "RolledBack",
            f"the spec's revision {wanted} does not run: it was rolled back ({rollback.reason}),"
            f" the primary runs revision {render.revision}; see RolledBack",
        )
    if progressing.status:
        return Verdict(False, "RollingOut", f"revision {wanted} is rolling out; see Progressing")
    if progressing.reason == "ProgressDeadlineExceeded":
        return Verdict(False, "ProgressDeadlineExceeded", progressing.message)
    return Verdict(True, "UpToDate", f"the primary runs revision {wanted}, the spec's")


def _why_no_rollback(last_ready: str | None) -> str:
    if last_ready is None:
        return "no earlier revision became ready, so there is nothing to roll back to"
    return "it is the last revision that became ready: its new pods (e.g. of a scale-up) fail"


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
            False,
            "RolloutComplete",
            f"revision {target} is rolled out to {count(deployment.wanted, 'pod')}",
        )
    message = (
        f"rolling out revision {target}: {deployment.updated}/{deployment.wanted} pods updated,"
        f" {deployment.ready} ready, {deployment.replicas} in all (maxSurge"
        f" {strategy.max_surge}, maxUnavailable {strategy.max_unavailable}; rolled back if no"
        f" progress for {deadline_seconds}s)"
    )
    return Verdict(True, "RollingUpdate", f"{message}; {surge_note}" if surge_note else message)
