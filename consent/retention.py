"""Retention: remove records older than the site keeps them, without breaking the chain.

A purge removes the oldest stretch of a site's chain and leaves a signed checkpoint
holding the sequence and hash of the last record removed; ``verify_chain`` starts from
it. The database lets a record be deleted only once a checkpoint covers it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update

from consent import ledger
from consent.db import db, now_utc
from consent.models import (
    ChainCheckpoint,
    ChainHead,
    ConsentRecord,
    CurrentState,
    IdempotentRequest,
    Site,
    Subject,
)

#: Idempotency keys only need to outlive the widget's retries.
IDEMPOTENCY_WINDOW = timedelta(days=7)


@dataclass
class PurgePlan:
    """What a purge removes: records after ``from_sequence`` up to ``through_sequence``."""

    site_key: str
    cutoff: datetime
    from_sequence: int
    through_sequence: int
    #: Why the cut stops where it does: "retention" (newer records) or "in force".
    stopped_by: str | None

    @property
    def count(self) -> int:
        return max(0, self.through_sequence - self.from_sequence)


def plan_purge(site: Site, *, now: datetime | None = None) -> PurgePlan:
    """Find the longest run of oldest records that are past retention and not in force."""
    now = now or now_utc()
    cutoff = now - timedelta(days=site.retention_days)
    checkpoint = ledger.latest_checkpoint(site)
    start = checkpoint.sequence if checkpoint else 0
    head = db.session.get(ChainHead, site.id)
    # A record is in force while it is some subject's latest, unexpired decision.
    in_force = (
        select(CurrentState.record_id)
        .join(Subject, Subject.id == CurrentState.subject_id)
        .where(
            Subject.site_id == site.id,
            CurrentState.expires_at > now,
            CurrentState.record_id.is_not(None),
        )
    )
    newer = db.session.scalar(
        select(func.min(ConsentRecord.sequence)).where(
            ConsentRecord.site_id == site.id,
            ConsentRecord.sequence > start,
            ConsentRecord.recorded_at >= cutoff,
        )
    )
    kept_in_force = db.session.scalar(
        select(func.min(ConsentRecord.sequence)).where(
            ConsentRecord.site_id == site.id,
            ConsentRecord.sequence > start,
            ConsentRecord.id.in_(in_force),
        )
    )
    blockers = {"retention": newer, "in force": kept_in_force}
    stopped_by = min(
        (name for name, sequence in blockers.items() if sequence is not None),
        key=lambda name: blockers[name],
        default=None,
    )
    through = blockers[stopped_by] - 1 if stopped_by else head.sequence
    return PurgePlan(site.key, cutoff, start, max(start, through), stopped_by)


def purge(site: Site, *, dry_run: bool = False, now: datetime | None = None) -> PurgePlan:
    """Remove the records ``plan_purge`` finds, leaving a signed checkpoint and a record."""
    ledger.lock_chain_head(site)
    plan = plan_purge(site, now=now)
    if dry_run or plan.count == 0:
        return plan
    last_removed = db.session.scalars(
        select(ConsentRecord).where(
            ConsentRecord.site_id == site.id, ConsentRecord.sequence == plan.through_sequence
        )
    ).one()
    purged_at = now_utc()
    db.session.add(
        ChainCheckpoint(
            site_id=site.id,
            sequence=plan.through_sequence,
            record_hash=last_removed.record_hash,
            records_removed=plan.count,
            purged_at=purged_at,
            signature=ledger.sign_checkpoint(
                site.key, plan.through_sequence, last_removed.record_hash, purged_at
            ),
        )
    )
    removed = select(ConsentRecord.id).where(
        ConsentRecord.site_id == site.id, ConsentRecord.sequence <= plan.through_sequence
    )
    # Expired decisions keep answering "expired"; they just lose the link to the record.
    db.session.execute(
        update(CurrentState).where(CurrentState.record_id.in_(removed)).values(record_id=None)
    )
    db.session.flush()
    db.session.execute(
        delete(ConsentRecord).where(
            ConsentRecord.site_id == site.id, ConsentRecord.sequence <= plan.through_sequence
        )
    )
    db.session.execute(
        delete(IdempotentRequest).where(
            IdempotentRequest.site_id == site.id,
            IdempotentRequest.created_at < (now or purged_at) - IDEMPOTENCY_WINDOW,
        )
    )
    ledger.append_record(
        site,
        None,
        event="purge",
        source="api",
        details={
            "through_sequence": plan.through_sequence,
            "removed": plan.count,
            "cutoff": plan.cutoff.isoformat(),
        },
    )
    return plan
