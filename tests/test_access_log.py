"""The access log: every read of identifiable data is written, chained and verifiable."""

from __future__ import annotations

import pytest
from flask_migrate import downgrade, upgrade
from helpers import PERSON_EMAIL, PERSON_USER_ID, bearer, make_person
from sqlalchemy import select, text

from consent.db import db, now_utc
from consent.models import AccessLogEntry


@pytest.fixture
def key(demo_site, make_key):
    return make_key(demo_site, "read", "write", "rights")


@pytest.fixture
def ada(client, demo_site, key):
    """Ada, corrected (entry 1) and exported (entry 2)."""
    token = make_person(client, demo_site, key, email_marketing=False)
    exported = client.get(
        "/v1/server/subjects/export", query_string={"email": PERSON_EMAIL}, headers=bearer(key)
    )
    assert exported.status_code == 200
    return token


def entries(app) -> list[AccessLogEntry]:
    with app.app_context():
        rows = db.session.scalars(select(AccessLogEntry).order_by(AccessLogEntry.id)).all()
        db.session.expunge_all()
        return rows


def last_entry(app) -> AccessLogEntry:
    return entries(app)[-1]


@pytest.mark.parametrize("output_format", ["json", "csv"])
def test_reading_the_suppression_list_is_logged(app, client, key, ada, output_format):
    response = client.get(
        "/v1/server/suppression",
        query_string={"purpose": "email_marketing", "format": output_format},
        headers=bearer(key),
    )
    assert response.status_code == 200
    assert PERSON_EMAIL in response.text
    entry = last_entry(app)
    assert entry.action == "suppression"
    assert entry.actor.startswith("api_key:")
    assert entry.details["purpose"] == "email_marketing"
    assert entry.details["format"] == output_format


def test_a_bulk_check_is_logged_with_its_size(app, client, key, ada):
    response = client.post(
        "/v1/server/bulk-check",
        json={"purpose": "email_marketing", "emails": [PERSON_EMAIL, "bob@example.com"]},
        headers=bearer(key),
    )
    assert response.status_code == 200
    entry = last_entry(app)
    assert entry.action == "bulk_check"
    assert entry.details == {"purpose": "email_marketing", "by": "email", "count": 2}


def test_an_export_keeps_its_reason(app, client, key, ada):
    response = client.get(
        "/v1/server/subjects/export",
        query_string={"user_id": PERSON_USER_ID, "reason": "ticket 1234"},
        headers=bearer(key),
    )
    assert response.status_code == 200
    entry = last_entry(app)
    assert (entry.action, entry.reason) == ("export", "ticket 1234")
    assert entry.subject_pseudonym == response.get_json()["subject"]["pseudonym"]


def test_a_cli_erasure_keeps_its_reason(app, runner, demo_site, ada):
    result = runner.invoke(
        args=["erase", demo_site, "--user-id", PERSON_USER_ID, "--yes", "--reason", "ticket 9"]
    )
    assert result.exit_code == 0, result.output
    entry = last_entry(app)
    assert (entry.actor, entry.action, entry.reason) == ("cli", "erase", "ticket 9")


def test_entries_are_chained_in_order(app, ada):
    chain = entries(app)
    assert [entry.sequence for entry in chain] == list(range(1, len(chain) + 1))
    assert [entry.previous_hash for entry in chain[1:]] == [e.entry_hash for e in chain[:-1]]


def test_verify_checks_the_access_log(runner, demo_site, ada):
    result = runner.invoke(args=["verify", demo_site])
    assert result.exit_code == 0, result.output
    assert f"{demo_site}: access log OK, 2 entries." in result.output


def unguarded(app, dialect, statement: str) -> None:
    """Run SQL on the access log as someone who removed its guard first would."""
    with app.app_context(), db.engine.begin() as connection:
        if dialect == "sqlite":
            connection.execute(text("DROP TRIGGER access_log_no_update"))
            connection.execute(text("DROP TRIGGER access_log_no_delete"))
        else:
            connection.execute(text("ALTER TABLE access_log DISABLE TRIGGER USER"))
        connection.execute(text(statement))


@pytest.mark.parametrize(
    "statement, problem, named",
    [
        (
            "UPDATE access_log SET actor = 'cli' WHERE sequence = 1",
            "access log BROKEN at entry #1 (id {id}): content does not match its hash",
            1,
        ),
        (
            "UPDATE access_log SET reason = 'routine' WHERE sequence = 2",
            "access log BROKEN at entry #2 (id {id}): content does not match its hash",
            2,
        ),
        (
            "DELETE FROM access_log WHERE sequence = 1",
            "access log BROKEN at entry #1 (id {id}): expected entry 1, found 2",
            2,
        ),
        ("DELETE FROM access_log WHERE sequence = 2", "entries were removed from the end", None),
    ],
)
def test_verify_names_a_tampered_access_log(
    app, runner, dialect, demo_site, ada, statement, problem, named
):
    ids = {entry.sequence: entry.id for entry in entries(app)}
    unguarded(app, dialect, statement)
    result = runner.invoke(args=["verify", demo_site])
    assert result.exit_code == 1
    assert problem.format(id=ids.get(named)) in result.output


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE access_log SET reason = 'routine'",
        "DELETE FROM access_log",
        "UPDATE erased_identifiers SET erased_at = erased_at",
        "DELETE FROM erased_identifiers",
    ],
)
def test_the_database_refuses_rewrites_of_the_log_and_the_erased(app, client, key, ada, statement):
    erased = client.post(
        "/v1/server/subjects/erase", json={"user_id": PERSON_USER_ID}, headers=bearer(key)
    )
    assert erased.status_code == 200
    with pytest.raises(Exception, match="append-only"), app.app_context():
        with db.engine.begin() as connection:
            connection.execute(text(statement))


def test_the_migration_chains_entries_written_before_it(app, runner, dialect):
    with app.app_context():
        downgrade(revision="0004")
        with db.engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO sites (key, name, allowed_origins, lifetime_days, "
                    "retention_days, languages, default_language, texts, created_at) "
                    "VALUES ('old', 'Old', '[]', 182, 1095, '[\"en\"]', 'en', '{}', :at)"
                ),
                {"at": now_utc()},
            )
            site_id = connection.execute(text("SELECT id FROM sites WHERE key = 'old'")).scalar()
            connection.execute(
                text(
                    "INSERT INTO chain_heads (site_id, sequence, record_hash) "
                    "VALUES (:site, 0, :genesis)"
                ),
                {"site": site_id, "genesis": "0" * 64},
            )
            for action in ("export", "erase"):
                connection.execute(
                    text(
                        "INSERT INTO access_log (site_id, actor, action, at, details) "
                        "VALUES (:site, 'cli', :action, :at, '{}')"
                    ),
                    {"site": site_id, "action": action, "at": now_utc()},
                )
        upgrade()
    result = runner.invoke(args=["verify", "old"])
    assert result.exit_code == 0, result.output
    assert "old: access log OK, 2 entries." in result.output
