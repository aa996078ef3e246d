"""Prove a site's history whole, from the database itself.

After concurrent writers or a killed process, the surfaces (a 201, a check) cannot show
that nothing forked or was left half-written; the rows can.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import select

from consent.chain import GENESIS_HASH, verify_chain
from consent.db import db
from consent.models import (
    ChainHead,
    ConsentRecord,
    CurrentState,
    IdempotentRequest,
    Purpose,
    Subject,
    Visitor,
)
from consent.sites import get_site_by_key


def expected_states(history: list[ConsentRecord]) -> dict[tuple[str, str], tuple[bool, int]]:
    """Replay a subject's decisions: (purpose, service) -> (granted, record id)."""
    states: dict[tuple[str, str], tuple[bool, int]] = {}
    for record in history:
        assert record.event in ("decision", "erasure", "correction"), (
            f"record #{record.sequence}: {record.event} events are not replayed here"
        )
        for decision in record.decisions if record.event == "decision" else []:
            purpose = decision["purpose"]
            # A decision for the whole purpose replaces its earlier per-service choices.
            states = {key: value for key, value in states.items() if key[0] != purpose}
            states[(purpose, "")] = (decision["granted"], record.id)
            for service, granted in decision.get("services", {}).items():
                states[(purpose, service)] = (granted, record.id)
    return states


def site_records(site) -> list[ConsentRecord]:
    """The site's history, oldest first (within an app context)."""
    return db.session.scalars(
        select(ConsentRecord)
        .where(ConsentRecord.site_id == site.id)
        .order_by(ConsentRecord.sequence)
    ).all()


def assert_history_consistent(app, site_key: str) -> int:
    """One unforked, verifiable chain; every subject, state and replay whole. Returns its length."""
    with app.app_context():
        site = get_site_by_key(site_key)
        records = site_records(site)
        sequences = [record.sequence for record in records]
        assert sequences == list(range(1, len(records) + 1)), "sequence numbers have gaps"
        previous = [record.previous_hash for record in records]
        assert len(set(previous)) == len(previous), "two records claim one predecessor: a fork"
        assert previous == [GENESIS_HASH] + [record.record_hash for record in records[:-1]]
        report = verify_chain(site)
        assert report.is_intact, report
        head = db.session.get(ChainHead, site.id)
        last_hash = records[-1].record_hash if records else GENESIS_HASH
        assert (head.sequence, head.record_hash) == (len(records), last_hash)

        purposes = {
            purpose.id: purpose.key
            for purpose in db.session.scalars(select(Purpose).where(Purpose.site_id == site.id))
        }
        history: dict[str, list[ConsentRecord]] = defaultdict(list)
        for record in records:
            history[record.subject_pseudonym].append(record)
        subjects = db.session.scalars(select(Subject).where(Subject.site_id == site.id)).all()
        for subject in subjects:
            mine = history[subject.pseudonym]
            assert mine, f"subject {subject.pseudonym} has no record: a half-written submission"
            states = {
                (purposes[state.purpose_id], state.service): (state.is_granted, state.record_id)
                for state in db.session.scalars(
                    select(CurrentState).where(CurrentState.subject_id == subject.id)
                )
            }
            if subject.erased_at is not None:
                assert mine[-1].event == "erasure", f"erased {subject.pseudonym} lacks its record"
                assert states == {}
                assert (subject.email_digest, subject.user_id_digest) == (None, None)
            else:
                assert states == expected_states(mine), f"state of {subject.pseudonym}"
        visitors_without_subject = db.session.scalars(
            select(Visitor.visitor_id)
            .outerjoin(Subject, Subject.id == Visitor.subject_id)
            .where(Visitor.site_id == site.id, Subject.id.is_(None))
        ).all()
        assert visitors_without_subject == []
        hashes = {record.record_hash for record in records}
        for replay in db.session.scalars(
            select(IdempotentRequest).where(IdempotentRequest.site_id == site.id)
        ):
            assert replay.response["record"]["hash"] in hashes, "a stored answer without its record"
        return len(records)
