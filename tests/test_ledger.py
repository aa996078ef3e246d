"""The history's guarantees, proven against the database itself."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
import sqlalchemy.exc
from helpers import ACCEPT_ALL, REJECT_ALL, bearer, check, submit
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from consent import create_app
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


def test_the_database_moves_the_chain_head_with_the_history(app, site_with_records):
    """Whoever inserts (here plain SQL, two records in one statement), the head follows
    to the newest record, and a record below the head never moves it back."""
    from consent.models import ChainHead, Site

    with app.app_context():
        site_id = db.session.scalar(select(Site.id).where(Site.key == site_with_records))
        newest = db.session.scalars(select(ConsentRecord).order_by(ConsentRecord.id)).all()[-1]
        row = {
            column: getattr(newest, column)
            for column in ConsentRecord.__table__.columns.keys()
            if column != "id"
        }
        rows = [{**row, "sequence": n, "record_hash": f"{n:064d}"} for n in (10, 7, 9)]
        with db.engine.begin() as connection:
            connection.execute(ConsentRecord.__table__.insert().values(rows[:2]))
            assert connection.execute(
                select(ChainHead.sequence, ChainHead.record_hash).where(
                    ChainHead.site_id == site_id
                )
            ).one() == (10, f"{10:064d}")
            connection.execute(ConsentRecord.__table__.insert().values(rows[2:]))
            head = select(ChainHead.sequence).where(ChainHead.site_id == site_id)
            assert connection.scalar(head) == 10


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
        (
            [
                "DELETE FROM current_states WHERE record_id IN "
                "(SELECT id FROM consent_records WHERE sequence = 4)",
                "DELETE FROM consent_records WHERE sequence = 4",
            ],
            4,
        ),
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
    from consent.chain import hash_record

    disable_guards(app, dialect)
    with app.app_context():
        record = db.session.scalars(select(ConsentRecord).where(ConsentRecord.sequence == 2)).one()
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
        return submit(
            app.test_client(), site, ACCEPT_ALL, headers={"Idempotency-Key": "one-click-3f9a7c2e"}
        ).get_json()

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


def record_id(app, sequence: int) -> int:
    with app.app_context():
        return db.session.scalar(select(ConsentRecord.id).where(ConsentRecord.sequence == sequence))


#: How an attacker could change each column of record #2; every one must break the chain.
COLUMN_TAMPERING = {
    "site_id": None,  # moving a record to another site: its own test below
    "sequence": "sequence = 99",
    "subject_pseudonym": "subject_pseudonym = subject_pseudonym || 'x'",
    "event": "event = 'erasure'",
    "source": "source = 'api'",
    "decisions": """decisions = '[{"purpose": "marketing", "granted": true}]'""",
    "details": """details = '{"note": "added later"}'""",
    "policy_version": "policy_version = 'v0'",
    "config_hash": "config_hash = 'c0ffee'",
    "language": "language = 'xx'",
    "is_gpc": "is_gpc = NOT is_gpc",
    "ip_truncated": "ip_truncated = '10.0.0.0'",
    "region": "region = 'FR'",
    "mode": "mode = 'opt-out'",
    "recorded_at": {
        "sqlite": "recorded_at = datetime(recorded_at, '+1 second')",
        "postgresql": "recorded_at = recorded_at + interval '1 second'",
    },
    "previous_hash": "previous_hash = record_hash",
    "record_hash": "record_hash = CASE WHEN substr(record_hash, 1, 1) = '0' THEN '1' ELSE '0' END"
    " || substr(record_hash, 2)",
}


def test_every_column_of_a_record_is_covered_by_tampering_tests():
    """A new column must be added above, and so be proven to be hashed."""
    columns = {column.name for column in ConsentRecord.__table__.columns} - {"id"}
    assert columns == set(COLUMN_TAMPERING)


def test_verify_names_the_record_whose_field_was_altered_whatever_the_field(
    app, runner, site_with_records, dialect
):
    disable_guards(app, dialect)
    table = ConsentRecord.__table__
    with app.app_context():
        original = db.session.execute(select(table).where(table.c.sequence == 2)).one()
    for column, change in COLUMN_TAMPERING.items():
        if change is None:
            continue
        change = change[dialect] if isinstance(change, dict) else change
        # A renumbered record leaves a gap: the record found in its place is named.
        named = record_id(app, 3) if column == "sequence" else original.id
        raw(app, f"UPDATE consent_records SET {change} WHERE id = :id", id=original.id)
        result = runner.invoke(args=["verify", site_with_records])
        assert result.exit_code == 1, column
        assert f"BROKEN at record #2 (id {named})" in result.output, (column, result.output)
        with app.app_context(), db.engine.begin() as connection:
            connection.execute(
                table.update().where(table.c.id == original.id).values(original._asdict())
            )
        assert runner.invoke(args=["verify", site_with_records]).exit_code == 0, column


def test_verify_names_records_moved_to_another_site(
    app, runner, make_site, site_with_records, dialect
):
    other = make_site()
    disable_guards(app, dialect)
    raw(
        app,
        "UPDATE consent_records SET site_id = (SELECT id FROM sites WHERE key = :other) "
        "WHERE sequence = 4",
        other=other,
    )
    result = runner.invoke(args=["verify"])
    assert result.exit_code == 1
    assert f"{site_with_records}: BROKEN at record #4" in result.output
    assert f"{other}: BROKEN at record #1 (id {record_id(app, 4)})" in result.output


def test_verify_names_the_first_of_two_reordered_records(app, runner, site_with_records, dialect):
    second, third = record_id(app, 2), record_id(app, 3)
    disable_guards(app, dialect)
    for statement in (
        "UPDATE consent_records SET sequence = -3 WHERE sequence = 3",
        "UPDATE consent_records SET sequence = 3 WHERE sequence = 2",
        "UPDATE consent_records SET sequence = 2 WHERE sequence = -3",
    ):
        raw(app, statement)
    assert (record_id(app, 2), record_id(app, 3)) == (third, second)
    result = runner.invoke(args=["verify", site_with_records])
    assert result.exit_code == 1
    assert (
        f"BROKEN at record #2 (id {third}): previous_hash does not match the record before it"
        in result.output
    )


# --- the application role of the README ----------------------------------------------

README = Path(__file__).resolve().parent.parent / "README.md"
INSERT_ONLY_TABLES = ("consent_records", "chain_checkpoints", "access_log")


def readme_role_statements(role: str, password: str) -> str:
    """The README's SQL for the application role, with this test's role name."""
    text = README.read_text()
    section = text[text.index("### A database role that may only append") :]
    start = section.index("```sql\n") + len("```sql\n")
    sql = section[start : section.index("```", start)]
    assert "consent_app" in sql and "PASSWORD '...'" in sql
    return sql.replace("PASSWORD '...'", f"PASSWORD '{password}'").replace("consent_app", role)


@pytest.fixture
def app_role_url(database_url):
    """A role set up exactly as the README says; returns the URL to connect as it."""
    role, password = f"consent_app_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with psycopg.connect(database_url, autocommit=True) as owner:
        owner.execute(readme_role_statements(role, password))
    yield (
        make_url(database_url)
        .set(username=role, password=password)
        .render_as_string(hide_password=False)
    )
    with psycopg.connect(database_url, autocommit=True) as owner:
        owner.execute(f"DROP OWNED BY {role}")
        owner.execute(f"DROP ROLE {role}")


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE {table} SET id = id",
        "DELETE FROM {table}",
        "TRUNCATE {table}",
    ],
)
def test_the_application_role_may_not_rewrite_history_even_without_triggers(
    app, site_with_records, database_url, app_role_url, statement
):
    with psycopg.connect(database_url, autocommit=True) as owner:
        for table in INSERT_ONLY_TABLES:  # so that only the role's privileges refuse
            owner.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
    with psycopg.connect(app_role_url, autocommit=True) as role:
        for table in INSERT_ONLY_TABLES:
            with pytest.raises(
                psycopg.errors.InsufficientPrivilege, match=f"permission denied for table {table}"
            ):
                role.execute(statement.format(table=table))
        count = role.execute("SELECT count(*) FROM consent_records").fetchone()[0]
    assert count == 4


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_service_runs_as_the_application_role(app, app_role_url, make_site, make_key):
    site = make_site()
    key = make_key(site, "read", "write", "rights")
    as_role = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": app_role_url,
            "SECRET_KEY": app.config["SECRET_KEY"],
            "DATA_KEY": app.config["DATA_KEY"],
        }
    )
    client = as_role.test_client()
    try:
        token = submit(client, site, ACCEPT_ALL).get_json()["visitor_token"]
        assert submit(client, site, REJECT_ALL, token=token).status_code == 201
        assert check(client, site, "analytics", token=token).get_json()["reason"] == "withdrawn"
        linked = client.post(
            "/v1/server/links",
            headers=bearer(key),
            json={"visitor_token": token, "user_id": "user-1"},
        )
        assert linked.status_code == 201
        erased = client.post(
            "/v1/server/subjects/erase", headers=bearer(key), json={"user_id": "user-1"}
        )
        assert erased.status_code == 200
        assert check(client, site, "analytics", token=token).get_json()["reason"] == "erased"
        result = as_role.test_cli_runner().invoke(args=["verify", site])
        assert result.exit_code == 0, result.output
        assert "OK, 4 records" in result.output
    finally:
        with as_role.app_context():
            db.session.remove()
            db.engine.dispose()
