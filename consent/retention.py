"""Retention of every data class, without breaking the chains.

A purge removes the oldest stretch of a site's chain and leaves a signed checkpoint
holding the sequence and hash of the last record removed; ``verify_chain`` starts from
it. The database lets a record be deleted only once a checkpoint covers it. The access
log is cut the same way, with its own checkpoints. Then, per site:

* subjects (and their encrypted identifiers) once no record of theirs is left and they
  are older than the consent lifetime;
* visitors not seen (no submission) for longer than the consent lifetime;
* rights requests completed or refused longer ago than the site keeps them;
* idempotency answers older than the site keeps them (24 hours by default);
* archived banners no record points to and not served for a consent lifetime.

``purge_site`` is the one documented path through the proof tables' triggers; run it
with ``consent purge`` (safe from several machines at once: ``take_purge_lock``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, exists, func, select, text, update

from consent import accesslog, chain
from consent.db import db, now_utc
from consent.models import (
    AccessLogCheckpoint,
    AccessLogEntry,
    BannerVersion,
    ChainCheckpoint,
    ChainHead,
    ConsentRecord,
    CurrentState,
    IdempotentRequest,
    RightsRequest,
    Site,
    Subject,
    Visitor,
)

#: The PostgreSQL advisory lock every ``consent purge`` takes ("consent" in ASCII).
PURGE_LOCK_KEY = 0x636F6E73656E74


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
    checkpoint = chain.latest_checkpoint(site)
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
    chain.lock_chain(site)
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
            signature=chain.sign_checkpoint(
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
    chain.append_record(
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


def take_purge_lock() -> bool:
    """Take the database-wide purge lock until commit; False if another purge holds it.

    PostgreSQL: a transaction-level advisory lock, tried without waiting. SQLite: the
    command's write transaction (``BEGIN IMMEDIATE``) already excludes every other
    writer, so a second purge waits for the first and then finds nothing to do.
    """
    if db.session.get_bind().dialect.name != "postgresql":
        db.session.execute(text("SELECT 1"))  # begins the write transaction now
        return True
    return bool(
        db.session.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": PURGE_LOCK_KEY})
    )


#: The classes ``purge_site`` counts besides records, in the order it prints them.
PURGED_CLASSES = (
    "subjects",
    "visitors",
    "access-log entries",
    "rights requests",
    "idempotency answers",
    "banner versions",
)


@dataclass
class SitePurge:
    """What one site's purge removed (or would remove): records, then every other class."""

    records: PurgePlan
    removed: dict[str, int] = field(default_factory=dict)


def purge_site(site: Site, *, dry_run: bool = False, now: datetime | None = None) -> SitePurge:
    """Apply every retention rule of the site; see the module's docstring."""
    now = now or now_utc()
    plan = purge(site, dry_run=dry_run, now=now)
    lifetime_ago = now - timedelta(days=site.lifetime_days)
    visitors = _purge_visitors(site, lifetime_ago, dry_run)
    subjects, their_visitors = _purge_subjects(site, lifetime_ago, dry_run)
    removed = {
        "subjects": subjects,
        "visitors": visitors + their_visitors,
        "access-log entries": _purge_access_log(
            site, now - timedelta(days=site.access_log_retention_days), dry_run, now
        ),
        "rights requests": _purge_rows(
            RightsRequest,
            site,
            and_(
                RightsRequest.state.in_(["completed", "refused"]),
                func.coalesce(RightsRequest.completed_at, RightsRequest.refused_at)
                < now - timedelta(days=site.rights_request_retention_days),
            ),
            dry_run,
        ),
        "idempotency answers": _purge_rows(
            IdempotentRequest,
            site,
            IdempotentRequest.created_at < now - timedelta(hours=site.idempotency_retention_hours),
            dry_run,
        ),
        "banner versions": _purge_rows(
            BannerVersion,
            site,
            and_(
                BannerVersion.last_served_at < lifetime_ago,
                ~exists().where(
                    ConsentRecord.site_id == BannerVersion.site_id,
                    ConsentRecord.config_hash == BannerVersion.config_hash,
                ),
            ),
            dry_run,
        ),
    }
    if not dry_run and (plan.count or any(removed.values())):
        accesslog.log_access(site, "service", "purge", details={"records": plan.count, **removed})
    return SitePurge(plan, removed)


def _purge_rows(model, site: Site, condition, dry_run: bool) -> int:
    where = and_(model.site_id == site.id, condition)
    count = db.session.scalar(select(func.count()).select_from(model).where(where))
    if count and not dry_run:
        db.session.execute(delete(model).where(where).execution_options(synchronize_session=False))
    return count


def _purge_subjects(site: Site, lifetime_ago: datetime, dry_run: bool) -> tuple[int, int]:
    """Subjects no record names any more, with their visitors and leftover state.

    Returns how many subjects and how many of their visitors (seen recently) go.
    """
    has_record = exists().where(
        ConsentRecord.site_id == Subject.site_id,
        ConsentRecord.subject_pseudonym == Subject.pseudonym,
    )
    gone = select(Subject.id).where(
        Subject.site_id == site.id, Subject.created_at < lifetime_ago, ~has_record
    )
    ids = db.session.scalars(gone).all()
    # Those unseen for a lifetime were counted (and, unless a dry run, removed) already.
    visitors = db.session.scalar(
        select(func.count())
        .select_from(Visitor)
        .where(
            Visitor.subject_id.in_(ids),
            func.coalesce(Visitor.last_seen_at, Visitor.created_at) >= lifetime_ago,
        )
    )
    if ids and not dry_run:
        for model, column in (
            (CurrentState, CurrentState.subject_id),
            (Visitor, Visitor.subject_id),
            (Subject, Subject.id),
        ):
            db.session.execute(
                delete(model).where(column.in_(ids)).execution_options(synchronize_session=False)
            )
    return len(ids), visitors


def _purge_visitors(site: Site, lifetime_ago: datetime, dry_run: bool) -> int:
    """Browsers that sent nothing for longer than a choice stands (their choice expired)."""
    return _purge_rows(
        Visitor,
        site,
        func.coalesce(Visitor.last_seen_at, Visitor.created_at) < lifetime_ago,
        dry_run,
    )


def _purge_access_log(site: Site, cutoff: datetime, dry_run: bool, now: datetime) -> int:
    """Cut the oldest stretch of the site's access log at a signed checkpoint."""
    head = accesslog.lock_head(site)
    checkpoint = chain.latest_checkpoint(site, AccessLogCheckpoint)
    start = checkpoint.sequence if checkpoint else 0
    newer = db.session.scalar(
        select(func.min(AccessLogEntry.sequence)).where(
            AccessLogEntry.site_id == site.id,
            AccessLogEntry.sequence > start,
            AccessLogEntry.at >= cutoff,
        )
    )
    through = (newer - 1) if newer is not None else head.sequence
    count = max(0, through - start)
    if count == 0 or dry_run:
        return count
    last = db.session.scalars(
        select(AccessLogEntry).where(
            AccessLogEntry.site_id == site.id, AccessLogEntry.sequence == through
        )
    ).one()
    db.session.add(
        AccessLogCheckpoint(
            site_id=site.id,
            sequence=through,
            entry_hash=last.entry_hash,
            entries_removed=count,
            purged_at=now,
            signature=chain.sign_checkpoint(
                site.key, through, last.entry_hash, now, label=accesslog.CHECKPOINT_LABEL
            ),
        )
    )
    db.session.flush()
    db.session.execute(
        delete(AccessLogEntry)
        .where(AccessLogEntry.site_id == site.id, AccessLogEntry.sequence <= through)
        .execution_options(synchronize_session=False)
    )
    return count
