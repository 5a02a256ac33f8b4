"""What the operator remembers about primary revisions, kept on their ConfigMaps' annotations
(metadata stays writable on an immutable ConfigMap): when a revision became ready, and why one was
rolled back. Status is recomputed from these, so wiping it loses nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .api.tier_config import TierConfig
from .naming import LABEL_REVISION, LABEL_TIER
from .verdict import stamp

READY_AT = "pagoda.dev/ready-at"
ROLLBACK_REASON = "pagoda.dev/rollback-reason"
ROLLBACK_MESSAGE = "pagoda.dev/rollback-message"


@dataclass(frozen=True)
class Rollback:
    reason: str  # ProgressDeadlineExceeded or CrashedDuringRollout
    message: str  # why, in words: it outlives the failing pods


@dataclass(frozen=True)
class RevisionRecord:
    config: TierConfig
    ready_at: datetime | None = None
    rollback: Rollback | None = None

    def annotations(self) -> dict[str, str]:
        found = {}
        if self.ready_at is not None:
            found[READY_AT] = stamp(self.ready_at)
        if self.rollback is not None:
            found[ROLLBACK_REASON] = self.rollback.reason
            found[ROLLBACK_MESSAGE] = self.rollback.message
        return found


def read_records(config_maps: list[dict]) -> dict[str, RevisionRecord]:
    """Primary revisions recorded in (owned) ConfigMaps, by revision."""
    records = {}
    for cm in config_maps:
        meta = cm["metadata"]
        labels, notes = meta.get("labels") or {}, meta.get("annotations") or {}
        text = (cm.get("data") or {}).get("revision.json")
        if labels.get(LABEL_TIER) != "primary" or not text:
            continue
        config = TierConfig.model_validate_json(text)
        if config.revision != labels.get(LABEL_REVISION):
            continue
        ready_at = notes.get(READY_AT)
        rollback = None
        if ROLLBACK_REASON in notes:
            rollback = Rollback(notes[ROLLBACK_REASON], notes.get(ROLLBACK_MESSAGE, ""))
        records[config.revision] = RevisionRecord(
            config,
            datetime.fromisoformat(ready_at) if ready_at else None,
            rollback,
        )
    return records


def last_ready(records: dict[str, RevisionRecord]) -> str | None:
    """The revision that most recently became ready."""
    ready = [(r.ready_at, revision) for revision, r in records.items() if r.ready_at]
    return max(ready)[1] if ready else None
