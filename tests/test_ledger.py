"""The history's guarantees, proven against the database itself."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy.exc
from helpers import ACCEPT_ALL, REJECT_ALL, check, submit
from sqlalchemy import select, text

from consent.db import db
from consent.models import ConsentRecord, CurrentState


def raw(app, statement: str, **params):
    """Run raw SQL in its own transaction, outside the ORM."""
    with app.app_context(), db.engine.begin() as connection:
        return connection.execute(text(statement), params)


def disable_guards(app, dialect):
    """What an attacker with full database access would do first."""
    if dialect == "postgresql":
        raw(app, "ALTER TABLE consent_records DISABLE TRIGGER USER")
    else:
        raw(app, "DROP TRIGGER consent_records_no_update")
        raw(app, "DROP TRIGGER consent_records_no_delete")


@pytest.fixture
def site_with_records(client, make_site):
    site = make_site()
    token = submit(client, site, ACCEPT_ALL).get_json()["visitor_token"]
    submit(client, site, REJECT_ALL, token=token)
    other = submit(client, site, ACCEPT_ALL).get_json()["visitor_token"]
    submit(client, site, REJECT_ALL, token=other)
    return site


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE consent_records SET source = 'api'",
        "UPDATE consent_records SET decisions = '[]' WHERE sequence = 1",
        "DELETE FROM consent_records",
        "DELETE FROM consent_records WHERE sequence = 3",
    ],
)
def test_database_refuses_to_rewrite_history(app, site_with_records, record_count, statement):
    with pytest.raises(sqlalchemy.exc.DatabaseError, match="append-only"):
        raw(app, statement)
    assert record_count() == 4


def test_postgresql_refuses_truncate(app, site_with_records, dialect, record_count):
    if dialect != "postgresql":
        pytest.skip("TRUNCATE exists on PostgreSQL only")
    with pytest.raises(sqlalchemy.exc.DatabaseError, match="append-only"):
        raw(app, "TRUNCATE consent_records CASCADE")
    assert record_count() == 4


def test_records_are_chained_by_hash(app, site_with_records):
    with app.app_context():
        records = db.session.scalars(select(ConsentRecord).order_by(ConsentRecord.sequence)).all()
        assert [r.sequence for r in records] == [1, 2, 3, 4]
        assert records[0].previous_hash == "0" * 64
        for before, after in zip(records, records[1:], strict=False):
            assert after.previous_hash == before.record_hash


def test_verify_passes_on_an_untouched_chain(runner, site_with_records):
    result = runner.invoke(args=["verify", site_with_records])
    assert result.exit_code == 0
    assert "OK, 4 records" in result.output


@pytest.mark.parametrize(
    ("tamper", "bad_sequence"),
    [
        (["UPDATE consent_records SET decisions = '[]' WHERE sequence = 2"], 2),
        (["UPDATE consent_records SET is_gpc = NOT is_gpc WHERE sequence = 4"], 4),
        (["UPDATE consent_records SET recorded_at = recorded_at WHERE sequence = 0"], None),
        (["DELETE FROM consent_records WHERE sequence = 1"], 1),
        (["DELETE FROM consent_records WHERE sequence = 3"], 3),
        (["UPDATE consent_records SET sequence = sequence + 10 WHERE sequence = 1"], 1),
        # Removing the newest record (and the state that points at it) from the end.
        (["DELETE FROM current_states WHERE record_id IN "
          "(SELECT id FROM consent_records WHERE sequence = 4)",
          "DELETE FROM consent_records WHERE sequence = 4"], 4),
    ],
)
def test_verify_names_the_first_tampered_record(
    app, runner, site_with_records, dialect, tamper, bad_sequence
):
    disable_guards(app, dialect)
    for statement in tamper:
        raw(app, statement)
    result = runner.invoke(args=["verify", site_with_records])
    if bad_sequence is None:
        assert result.exit_code == 0
        return
    assert result.exit_code == 1
    assert f"BROKEN at record #{bad_sequence}" in result.output


def test_verify_catches_a_recomputed_hash(app, runner, site_with_records, dialect):
    """Rewriting a record and its own hash still breaks the link to the next one."""
    from consent.ledger import hash_record

    disable_guards(app, dialect)
    with app.app_context():
        record = db.session.scalars(
            select(ConsentRecord).where(ConsentRecord.sequence == 2)
        ).one()
        record.decisions = [{"purpose": "analytics", "granted": True}]
        record.record_hash = hash_record(record, site_with_records)
        db.session.commit()
    result = runner.invoke(args=["verify", site_with_records])
    assert result.exit_code == 1
    assert "BROKEN at record #3" in result.output


def test_concurrent_writers_never_fork_the_chain(app, make_site):
    site = make_site()

    def one_submission(index: int) -> int:
        decisions = ACCEPT_ALL if index % 2 else REJECT_ALL
        return submit(app.test_client(), site, decisions).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(one_submission, range(40)))
    assert statuses == [201] * 40
    with app.app_context():
        sequences = db.session.scalars(
            select(ConsentRecord.sequence).order_by(ConsentRecord.sequence)
        ).all()
    assert sequences == list(range(1, 41))
    assert app.test_cli_runner().invoke(args=["verify", site]).exit_code == 0


def test_concurrent_retries_with_one_idempotency_key_record_once(app, make_site, record_count):
    site = make_site()

    def retry(_):
        return submit(app.test_client(), site, ACCEPT_ALL,
                      headers={"Idempotency-Key": "one-click"}).get_json()

    with ThreadPoolExecutor(max_workers=6) as pool:
        bodies = list(pool.map(retry, range(12)))
    assert record_count() == 1
    assert len({body["record"]["hash"] for body in bodies}) == 1


def test_current_state_is_the_latest_record_per_purpose(app, client, make_site):
    site = make_site()
    token = submit(client, site, ACCEPT_ALL).get_json()["visitor_token"]
    submit(client, site, [{"purpose": "marketing", "granted": False}], token=token)
    latest = submit(client, site, [{"purpose": "analytics", "granted": False}], token=token)
    with app.app_context():
        states = db.session.scalars(select(CurrentState).where(CurrentState.service == "")).all()
        by_record = {state.record_id for state in states}
    assert latest.get_json()["record"]["id"] in by_record
    assert check(client, site, "preferences", token=token).get_json()["allowed"] is True
    assert check(client, site, "marketing", token=token).get_json()["reason"] == "withdrawn"
    assert check(client, site, "analytics", token=token).get_json()["reason"] == "withdrawn"
