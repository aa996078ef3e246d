"""Fill a site's history fast, for benchmarks: N records over N/10 visitors.

Records are written with plain multi-row INSERTs (COPY on PostgreSQL), not through the
API, and their hashes are placeholders: a bulk-loaded history does not ``verify``.
Current state is written for each visitor's last record, as the API would leave it.

    python bench/bulk_load.py postgresql://postgres@127.0.0.1/consent_bench 1000000
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from datetime import UTC, datetime, timedelta

from serving import app_for
from sqlalchemy import bindparam, insert, select, text

from consent.db import db
from consent.models import PolicyVersion, Subject

RECORDS_PER_VISITOR = 10
BATCH = 50_000
PURPOSES = ("analytics", "marketing", "preferences")


def _rows(site_id: int, start: int, stop: int, now: datetime):
    """Yield (record, visitor index) for sequences start+1 .. stop."""
    for sequence in range(start + 1, stop + 1):
        visitor = (sequence - 1) // RECORDS_PER_VISITOR
        granted = sequence % 3 != 0
        decisions = json.dumps([{"purpose": p, "granted": granted} for p in PURPOSES])
        digest = hashlib.sha256(f"{site_id}:{sequence}".encode()).hexdigest()
        yield (
            {
                "site_id": site_id,
                "sequence": sequence,
                "subject_pseudonym": f"bulk-{visitor}",
                "event": "decision",
                "source": "banner",
                "decisions": decisions,
                "details": "{}",
                "policy_version": "2026-11-01",
                "is_gpc": False,
                "recorded_at": now - timedelta(seconds=stop - sequence),
                "previous_hash": "0" * 64,
                "record_hash": digest,
            },
            visitor,
        )


def load(url: str, site_key: str, total: int) -> None:
    """Grow the site's history to ``total`` records (adds only what is missing)."""
    app = app_for(url)
    with app.app_context():
        connection = db.session.connection()
        (site_id,) = connection.execute(
            text("SELECT id FROM sites WHERE key = :k"), {"k": site_key}
        ).one()
        start = connection.execute(
            text("SELECT COALESCE(MAX(sequence), 0) FROM consent_records WHERE site_id = :s"),
            {"s": site_id},
        ).scalar_one()
        purpose_ids = dict(
            connection.execute(
                text("SELECT key, id FROM purposes WHERE site_id = :s"), {"s": site_id}
            ).all()
        )
        policy_at = db.session.scalar(
            select(PolicyVersion.published_at).where(PolicyVersion.site_id == site_id)
        )
        now = datetime.now(UTC)
        is_postgres = db.engine.dialect.name == "postgresql"
        for batch_start in range(start, total, BATCH):
            batch_stop = min(total, batch_start + BATCH)
            rows = list(_rows(site_id, batch_start, batch_stop, now))
            records = [record for record, _ in rows]
            if is_postgres:
                _copy(connection, records)
            else:
                for record in records:
                    record["recorded_at"] = record["recorded_at"].replace(tzinfo=None)
                connection.execute(
                    text(
                        "INSERT INTO consent_records (site_id, sequence, subject_pseudonym, event, "
                        "source, decisions, details, policy_version, is_gpc, recorded_at, "
                        "previous_hash, record_hash) VALUES (:site_id, :sequence, "
                        ":subject_pseudonym, :event, :source, :decisions, :details, "
                        ":policy_version, :is_gpc, :recorded_at, :previous_hash, :record_hash)"
                    ),
                    records,
                )
            _subjects_and_state(connection, site_id, rows, purpose_ids, policy_at, now)
            db.session.commit()
            connection = db.session.connection()
        # The chain head followed the inserts (migration 0014's trigger).
        if is_postgres:
            db.session.execute(text("ANALYZE"))
            db.session.commit()
        db.engine.dispose()


def _copy(connection, records: list[dict]) -> None:
    columns = list(records[0])
    buffer = io.StringIO()
    for record in records:
        buffer.write(
            "\t".join(
                "t"
                if value is True
                else "f"
                if value is False
                else value.isoformat()
                if isinstance(value, datetime)
                else str(value)
                for value in record.values()
            )
            + "\n"
        )
    cursor = connection.connection.driver_connection.cursor()
    with cursor.copy(f"COPY consent_records ({', '.join(columns)}) FROM STDIN") as copy:
        copy.write(buffer.getvalue())


def _subjects_and_state(connection, site_id, rows, purpose_ids, policy_at, now) -> None:
    """One subject and visitor per bulk visitor; state from its last record."""
    last_of: dict[int, dict] = {}
    for record, visitor in rows:
        last_of[visitor] = record
    first_sequence = rows[0][0]["sequence"]
    # A visitor is new in this batch when its first record is in it.
    new_visitors = sorted(v for v in last_of if v * RECORDS_PER_VISITOR + 1 >= first_sequence)
    created = now.replace(tzinfo=None) if connection.dialect.name == "sqlite" else now
    # The new subjects' ids come back from their insert; only a visitor whose first
    # record was in an earlier batch is looked up (a lookup of every name can be planned
    # as a scan of the whole table while its statistics lag behind the load).
    new_subjects = [
        {"site_id": site_id, "pseudonym": f"bulk-{v}", "created_at": now} for v in new_visitors
    ]
    ids = {}
    if new_subjects:
        returning = insert(Subject).returning(Subject.pseudonym, Subject.id)
        ids = dict(connection.execute(returning, new_subjects).all())
    earlier = [f"bulk-{v}" for v in last_of if f"bulk-{v}" not in ids]
    if earlier:
        ids.update(
            connection.execute(
                select(Subject.pseudonym, Subject.id).where(Subject.pseudonym.in_(earlier))
            ).all()
        )
    connection.execute(
        text(
            "INSERT INTO visitors (visitor_id, site_id, subject_id, created_at) "
            "VALUES (:v, :s, :subject, :c)"
        ),
        [
            {"v": f"bulk-visitor-{v}", "s": site_id, "subject": ids[f"bulk-{v}"], "c": created}
            for v in new_visitors
        ],
    )
    connection.execute(
        text("DELETE FROM current_states WHERE subject_id IN :ids").bindparams(
            bindparam("ids", expanding=True)
        ),
        {"ids": [ids[f"bulk-{v}"] for v in last_of]},
    )
    states = []
    for visitor, record in last_of.items():
        decided = record["recorded_at"]
        for decision in json.loads(record["decisions"]):
            states.append(
                {
                    "subject": ids[f"bulk-{visitor}"],
                    "purpose": purpose_ids[decision["purpose"]],
                    "granted": decision["granted"],
                    "decided": decided,
                    "expires": decided + timedelta(days=182),
                    "policy": policy_at,
                }
            )
    if connection.dialect.name == "sqlite":
        for state in states:
            for name in ("decided", "expires", "policy"):
                state[name] = state[name].replace(tzinfo=None)
    connection.execute(
        text(
            "INSERT INTO current_states (subject_id, purpose_id, service, is_granted, "
            "is_withdrawal, decided_at, expires_at, policy_published_at, record_id, source) "
            "VALUES (:subject, :purpose, '', :granted, false, :decided, :expires, :policy, "
            "NULL, 'banner')"
        ),
        states,
    )


if __name__ == "__main__":
    load(sys.argv[1], "demo", int(sys.argv[2]))
