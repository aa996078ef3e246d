"""The record log with filters, and the stored results of chain verification."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import bindparam, select, text

from consent.admin.forms import start_of
from consent.db import db
from consent.models import ConsentRecord, Site

PAGE_SIZE = 50


@dataclass
class RecordFilters:
    """What the record log is narrowed to; empty values do not filter."""

    purpose: str = ""
    #: "granted", "denied" or "".
    decision: str = ""
    source: str = ""
    subject: str = ""
    start: date | None = None
    end: date | None = None


def _decision_clause(dialect: str, purpose: str, decision: str):
    """Records with a decision matching the purpose and/or outcome, inside the JSON list."""
    wanted: dict = {}
    if purpose:
        wanted["purpose"] = purpose
    if decision:
        wanted["granted"] = decision == "granted"
    if dialect == "postgresql":
        return text(
            "CAST(consent_records.decisions AS jsonb) @> CAST(:wanted AS jsonb)"
        ).bindparams(bindparam("wanted", json.dumps([wanted])))
    conditions = []
    params = []
    if purpose:
        conditions.append("json_extract(d.value, '$.purpose') = :purpose")
        params.append(bindparam("purpose", purpose))
    if decision:
        conditions.append("json_extract(d.value, '$.granted') = :granted")
        params.append(bindparam("granted", int(wanted["granted"])))
    return text(
        "EXISTS (SELECT 1 FROM json_each(consent_records.decisions) AS d "
        f"WHERE {' AND '.join(conditions)})"
    ).bindparams(*params)


def filtered_records(site: Site, filters: RecordFilters):
    """The select for the site's records that pass the filters (not yet ordered)."""
    query = select(ConsentRecord).where(ConsentRecord.site_id == site.id)
    if filters.source:
        query = query.where(ConsentRecord.source == filters.source)
    if filters.subject:
        query = query.where(ConsentRecord.subject_pseudonym == filters.subject)
    if filters.start:
        query = query.where(ConsentRecord.recorded_at >= start_of(filters.start))
    if filters.end:
        query = query.where(ConsentRecord.recorded_at < start_of(filters.end + timedelta(days=1)))
    if filters.purpose or filters.decision:
        dialect = db.session.get_bind().dialect.name
        query = query.where(_decision_clause(dialect, filters.purpose, filters.decision))
    return query


@dataclass
class RecordPage:
    records: list[ConsentRecord]
    #: Sequence to pass as ``before`` for older records, or None on the last page.
    older: int | None
    #: Sequence to pass as ``after`` for newer records, or None on the first page.
    newer: int | None


def record_page(
    site: Site, filters: RecordFilters, *, before: int | None = None, after: int | None = None
) -> RecordPage:
    """One page of matching records, newest first, by keyset on the sequence."""
    query = filtered_records(site, filters)
    if after is not None:
        # Walk forward from ``after`` and turn the page round to keep newest first.
        rows = db.session.scalars(
            query.where(ConsentRecord.sequence > after)
            .order_by(ConsentRecord.sequence)
            .limit(PAGE_SIZE + 1)
        ).all()
        has_newer = len(rows) > PAGE_SIZE
        records = list(reversed(rows[:PAGE_SIZE]))
        has_older = True
    else:
        if before is not None:
            query = query.where(ConsentRecord.sequence < before)
        rows = db.session.scalars(
            query.order_by(ConsentRecord.sequence.desc()).limit(PAGE_SIZE + 1)
        ).all()
        records = rows[:PAGE_SIZE]
        has_older = len(rows) > PAGE_SIZE
        has_newer = before is not None
    return RecordPage(
        records,
        older=records[-1].sequence if records and has_older else None,
        newer=records[0].sequence if records and has_newer else None,
    )
