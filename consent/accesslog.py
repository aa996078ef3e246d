"""The access log: who read or changed what about whom, why and when, chained per site.

Each entry stores the SHA-256 of the site's previous entry, like the consent history,
and a head row per site serialises appends (its row lock on PostgreSQL, the write
transaction on SQLite). ``verify_access_log`` walks the chain from the latest signed
retention checkpoint and names the first entry that was changed, removed or reordered.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import select

from consent.chain import ChainReport, walk_from_checkpoint
from consent.db import db, lock_row_once, now_utc
from consent.models import AccessLogCheckpoint, AccessLogEntry, AccessLogHead, Site

#: Transaction cache: access-log heads locked by the current transaction.
LOCKED_HEADS = "consent.locked_access_log_heads"


def canonical_entry(
    *,
    site_key: str,
    sequence: int,
    actor: str,
    action: str,
    subject_pseudonym: str | None,
    reason: str | None,
    at: datetime,
    details: dict[str, Any],
    previous_hash: str,
) -> bytes:
    """Serialise what an entry's hash covers: every field but the hash, stable bytes."""
    fields = {
        "site": site_key,
        "sequence": sequence,
        "actor": actor,
        "action": action,
        "subject": subject_pseudonym,
        "reason": reason,
        "at": at.isoformat(timespec="microseconds"),
        "details": details,
        "previous_hash": previous_hash,
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def hash_entry(entry: AccessLogEntry, site_key: str) -> str:
    return hashlib.sha256(
        canonical_entry(
            site_key=site_key,
            sequence=entry.sequence,
            actor=entry.actor,
            action=entry.action,
            subject_pseudonym=entry.subject_pseudonym,
            reason=entry.reason,
            at=entry.at,
            details=entry.details,
            previous_hash=entry.previous_hash,
        )
    ).hexdigest()


def lock_head(site: Site) -> AccessLogHead:
    """Lock the site's access-log head until commit, once per transaction."""
    return lock_row_once(AccessLogHead, site.id, LOCKED_HEADS)


def log_access(
    site: Site,
    actor: str,
    action: str,
    subject_pseudonym: str | None = None,
    *,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> AccessLogEntry:
    """Append one entry to the site's access log: who did what to whose data, and why."""
    head = lock_head(site)
    entry = AccessLogEntry(
        site_id=site.id,
        sequence=head.sequence + 1,
        actor=actor,
        action=action,
        subject_pseudonym=subject_pseudonym,
        reason=(reason or "").strip() or None,
        at=now_utc(),
        details=details or {},
        previous_hash=head.entry_hash,
    )
    entry.entry_hash = hash_entry(entry, site.key)
    db.session.add(entry)
    head.sequence = entry.sequence
    head.entry_hash = entry.entry_hash
    db.session.flush()
    return entry


def sign_checkpoint(site_key: str, sequence: int, entry_hash: str, purged_at: datetime) -> str:
    """HMAC an access-log checkpoint with the app's secret (its own label)."""
    message = f"{site_key}\x00{sequence}\x00{entry_hash}\x00{purged_at.isoformat()}".encode()
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, b"access-log-checkpoint\x00" + message, hashlib.sha256).hexdigest()


def latest_checkpoint(site: Site) -> AccessLogCheckpoint | None:
    return db.session.scalars(
        select(AccessLogCheckpoint)
        .where(AccessLogCheckpoint.site_id == site.id)
        .order_by(AccessLogCheckpoint.sequence.desc())
        .limit(1)
    ).first()


def _entries_in_order(site: Site, after: int, batch_size: int = 1000):
    last_sequence = after
    while True:
        batch = db.session.scalars(
            select(AccessLogEntry)
            .where(AccessLogEntry.site_id == site.id, AccessLogEntry.sequence > last_sequence)
            .order_by(AccessLogEntry.sequence)
            .limit(batch_size)
        ).all()
        yield from batch
        if len(batch) < batch_size:
            return
        last_sequence = batch[-1].sequence


def verify_access_log(site: Site) -> ChainReport:
    """Walk the site's access log in order and name the first entry that does not match."""
    return walk_from_checkpoint(
        site.key,
        latest_checkpoint(site),
        sign=sign_checkpoint,
        bad_signature="the access log's retention checkpoint is not signed by purge",
        links_after=lambda sequence: _entries_in_order(site, after=sequence),
        hash_of=lambda entry: hash_entry(entry, site.key),
        hash_attribute="entry_hash",
        head=db.session.get(AccessLogHead, site.id),
        names=("entry", "entry", "the access log's head", "entries", "the log"),
    )
