"""The hash chain of a site's history: lock its head, append, hash, verify, checkpoints.

Each record stores the hash of the one before it, so any edit or removal shows in
``verify_chain``; a retention purge leaves a signed checkpoint the walk starts from.
Functions here flush but never commit.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm.attributes import set_committed_value

from consent.db import db, lock_row_once, now_utc, transaction_cache
from consent.models import (
    AccessLogHead,
    ChainCheckpoint,
    ChainHead,
    ConsentRecord,
    PolicyVersion,
    Site,
    Subject,
    VerificationRun,
)

GENESIS_HASH = "0" * 64
#: Transaction cache: chain heads locked by the current transaction.
LOCKED_HEADS = "consent.locked_chain_heads"


def canonical_record(record: ConsentRecord, site_key: str) -> bytes:
    """Serialise what a record's hash covers: every field but the hash, stable bytes."""
    fields = {
        "site": site_key,
        "sequence": record.sequence,
        "subject": record.subject_pseudonym,
        "event": record.event,
        "source": record.source,
        "decisions": record.decisions,
        "details": record.details,
        "policy_version": record.policy_version,
        "config_hash": record.config_hash,
        "language": record.language,
        "gpc": record.is_gpc,
        "ip": record.ip_truncated,
        "recorded_at": record.recorded_at.isoformat(timespec="microseconds"),
        "previous_hash": record.previous_hash,
    }
    # Only where set: records written before regions existed keep their hashes.
    for name in ("region", "mode"):
        if getattr(record, name) is not None:
            fields[name] = getattr(record, name)
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def hash_record(record: ConsentRecord, site_key: str) -> str:
    return hashlib.sha256(canonical_record(record, site_key)).hexdigest()


def linked_record(
    site_id: int, site_key: str, sequence: int, previous_hash: str, **fields
) -> ConsentRecord:
    """A record at ``sequence`` after ``previous_hash``, stamped now and hashed (not added)."""
    record = ConsentRecord(
        site_id=site_id,
        sequence=sequence,
        previous_hash=previous_hash,
        recorded_at=now_utc(),
        **fields,
    )
    record.record_hash = hash_record(record, site_key)
    return record


def start_chain(site: Site) -> None:
    """Give a new site the heads of an empty chain and an empty access log."""
    db.session.add(ChainHead(site_id=site.id, sequence=0, record_hash=GENESIS_HASH))
    db.session.add(AccessLogHead(site_id=site.id, sequence=0, entry_hash=GENESIS_HASH))


def lock_chain(site: Site, *subjects: Subject | None) -> ChainHead:
    """Lock the site's chain until commit, then re-read under the lock the subjects given.

    Appends queue per site: on PostgreSQL the head row is locked (``SELECT ... FOR
    UPDATE``); on SQLite the write transaction (``BEGIN IMMEDIATE``, see ``consent.db``)
    already serialises every writer. The lock is taken once per transaction.

    A subject read before the lock may have been erased, linked or decided on by an
    append that committed meanwhile; what the caller decides must rest on what the
    previous append left. Domain functions call this themselves: callers never lock.
    """
    was_locked = site.id in transaction_cache(LOCKED_HEADS)
    head = lock_row_once(ChainHead, site.id, LOCKED_HEADS)
    if not was_locked:
        for subject in subjects:
            if subject is not None and subject in db.session:
                db.session.refresh(subject)
    return head


def append_record(
    site: Site,
    subject: Subject | None,
    *,
    event: str,
    source: str,
    decisions: list[dict[str, Any]] | None = None,
    details: dict[str, Any] | None = None,
    policy_version: PolicyVersion | None = None,
    config_hash: str | None = None,
    language: str | None = None,
    is_gpc: bool = False,
    ip_truncated: str | None = None,
) -> ConsentRecord:
    """Append one record to the site's chain, under its lock (taken here if not held).

    ``subject`` is None for the service's own events (a retention purge).
    """
    head = lock_chain(site)
    record = linked_record(
        site.id,
        site.key,
        head.sequence + 1,
        head.record_hash,
        subject_pseudonym=subject.pseudonym if subject else "",
        event=event,
        source=source,
        decisions=decisions or [],
        details=details or {},
        policy_version=policy_version.version if policy_version else None,
        config_hash=config_hash,
        language=language,
        is_gpc=is_gpc,
        ip_truncated=ip_truncated,
    )
    db.session.add(record)
    db.session.flush()
    # The database moved the head as the record went in (migration 0014); the loaded
    # head says so too, for later appends in this transaction, without writing again.
    set_committed_value(head, "sequence", record.sequence)
    set_committed_value(head, "record_hash", record.record_hash)
    return record


@dataclass
class ChainReport:
    """What ``verify_chain`` found."""

    site_key: str
    records_checked: int
    is_intact: bool
    #: The sequence number of the first record that does not match, if any.
    first_bad_sequence: int | None = None
    first_bad_record_id: int | None = None
    problem: str | None = None


def links_in_order(model, site: Site, after: int = 0, batch_size: int = 1000):
    """Yield a site's links of a chain (``ConsentRecord``, ``AccessLogEntry``) by
    sequence, a batch at a time (keyset pagination)."""
    last_sequence = after
    while True:
        batch = db.session.scalars(
            select(model)
            .where(model.site_id == site.id, model.sequence > last_sequence)
            .order_by(model.sequence)
            .limit(batch_size)
        ).all()
        yield from batch
        if len(batch) < batch_size:
            return
        last_sequence = batch[-1].sequence
        for link in batch:  # keep memory flat on long chains
            db.session.expunge(link)


def sign_checkpoint(
    site_key: str, sequence: int, link_hash: str, purged_at: datetime, label: str = "checkpoint"
) -> str:
    """HMAC a checkpoint with the app's secret and the chain's own ``label``: database
    access alone cannot forge one."""
    message = f"{label}\x00{site_key}\x00{sequence}\x00{link_hash}\x00{purged_at.isoformat()}"
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def latest_checkpoint(site: Site, model=ChainCheckpoint):
    """The retention checkpoint a chain (``ChainCheckpoint``, ``AccessLogCheckpoint``)
    now starts from, if any purge happened."""
    return db.session.scalars(
        select(model).where(model.site_id == site.id).order_by(model.sequence.desc()).limit(1)
    ).first()


def verify_chain(site: Site) -> ChainReport:
    """Walk the site's chain in order and name the first record that does not match.

    After a retention purge the walk starts at the latest checkpoint, whose signature
    must be valid.
    """
    return walk_from_checkpoint(
        site.key,
        latest_checkpoint(site),
        sign=sign_checkpoint,
        bad_signature="the retention checkpoint's signature is invalid: it was not made by purge",
        links_after=lambda sequence: links_in_order(ConsentRecord, site, after=sequence),
        hash_of=lambda record: hash_record(record, site.key),
        hash_attribute="record_hash",
        head=db.session.get(ChainHead, site.id),
        names=("sequence", "record", "the chain head", "records", "the chain"),
    )


def walk_from_checkpoint(
    site_key: str, checkpoint, *, sign, bad_signature: str, links_after, hash_attribute: str, **walk
) -> ChainReport:
    """Walk a chain (``walk_links``) from its start, or after its latest retention
    checkpoint once ``sign`` proves the checkpoint was made by purge."""
    expected_previous, expected_sequence = GENESIS_HASH, 1
    if checkpoint is not None:
        checkpoint_hash = getattr(checkpoint, hash_attribute)
        signature = sign(site_key, checkpoint.sequence, checkpoint_hash, checkpoint.purged_at)
        if not hmac.compare_digest(signature, checkpoint.signature):
            return ChainReport(site_key, 0, False, checkpoint.sequence, None, bad_signature)
        expected_previous, expected_sequence = checkpoint_hash, checkpoint.sequence + 1
    return walk_links(
        site_key,
        links_after(expected_sequence - 1),
        hash_attribute=hash_attribute,
        expected_previous=expected_previous,
        expected_sequence=expected_sequence,
        **walk,
    )


def walk_links(
    site_key: str,
    links,
    *,
    hash_of,
    hash_attribute: str,
    expected_previous: str,
    expected_sequence: int,
    head,
    names: tuple[str, str, str, str, str],
) -> ChainReport:
    """Walk hash-chained rows in sequence order (the history, the access log) from where
    the walk starts, and check the head agrees: name the first row that does not match.

    ``names`` words the problems: (sequence, row, head, rows, chain).
    """
    sequence_word, row_word, head_word, rows_word, chain_word = names
    count = 0
    for link in links:
        problem = None
        if link.sequence != expected_sequence:
            problem = f"expected {sequence_word} {expected_sequence}, found {link.sequence}"
        elif link.previous_hash != expected_previous:
            problem = f"previous_hash does not match the {row_word} before it"
        elif hash_of(link) != getattr(link, hash_attribute):
            problem = "content does not match its hash"
        if problem:
            return ChainReport(site_key, count, False, expected_sequence, link.id, problem)
        count += 1
        expected_previous = getattr(link, hash_attribute)
        expected_sequence += 1
    if head is not None and (head.sequence, getattr(head, hash_attribute)) != (
        expected_sequence - 1,
        expected_previous,
    ):
        return ChainReport(
            site_key,
            count,
            False,
            expected_sequence if head.sequence >= expected_sequence else head.sequence,
            None,
            f"{head_word} says {head.sequence} {rows_word}, but {chain_word} ends at "
            f"{expected_sequence - 1}: {rows_word} were removed from the end",
        )
    return ChainReport(site_key, count, True)


def record_verification(site: Site, report: ChainReport, ran_by: str) -> VerificationRun:
    """Keep the outcome of a ``verify`` of the site's chain."""
    run = VerificationRun(
        site_id=site.id,
        ran_by=ran_by,
        is_intact=report.is_intact,
        records_checked=report.records_checked,
        first_bad_sequence=report.first_bad_sequence,
        problem=report.problem,
    )
    db.session.add(run)
    db.session.flush()
    return run


def latest_verification(site: Site) -> VerificationRun | None:
    """The outcome of the site's latest ``verify``, if it ever ran."""
    return db.session.scalars(
        select(VerificationRun)
        .where(VerificationRun.site_id == site.id)
        .order_by(VerificationRun.ran_at.desc(), VerificationRun.id.desc())
        .limit(1)
    ).first()
