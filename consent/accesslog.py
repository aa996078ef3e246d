"""The access log: who read or changed what about whom, why and when, chained per site.

Each entry stores the SHA-256 of the site's previous entry, like the consent history,
and a head row per site serialises appends (its row lock on PostgreSQL, the write
transaction on SQLite). ``verify_access_log`` walks the chain from the latest signed
retention checkpoint and names the first entry that was changed, removed or reordered.
"""

from __future__ import annotations

import functools
import hashlib
import json
from datetime import datetime
from typing import Any

from consent.chain import (
    ChainReport,
    latest_checkpoint,
    links_in_order,
    sign_checkpoint,
    walk_from_checkpoint,
)
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


#: The access log's checkpoints are signed apart from the history's.
CHECKPOINT_LABEL = "access-log-checkpoint"


def verify_access_log(site: Site) -> ChainReport:
    """Walk the site's access log in order and name the first entry that does not match."""
    return walk_from_checkpoint(
        site.key,
        latest_checkpoint(site, AccessLogCheckpoint),
        sign=functools.partial(sign_checkpoint, label=CHECKPOINT_LABEL),
        bad_signature="the access log's retention checkpoint is not signed by purge",
        links_after=lambda sequence: links_in_order(AccessLogEntry, site, after=sequence),
        hash_of=lambda entry: hash_entry(entry, site.key),
        hash_attribute="entry_hash",
        head=db.session.get(AccessLogHead, site.id),
        names=("entry", "entry", "the access log's head", "entries", "the log"),
    )
