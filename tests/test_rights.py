"""People's rights: access and export, correction, erasure, and the access log."""

from __future__ import annotations

import base64
import csv
import io
import json

import pytest
import sqlalchemy.exc
from helpers import ACCEPT_ALL, bearer, check, submit
from sqlalchemy import select, text

from consent.db import db
from consent.models import AccessLogEntry


@pytest.fixture
def rights_key(demo_site, make_key):
    return make_key(demo_site, "read", "write", "rights")


@pytest.fixture
def person(client, demo_site, rights_key):
    """Ada: a visitor who accepted everything, linked to user id ada-1 and an email."""
    token = submit(client, demo_site, ACCEPT_ALL).get_json()["visitor_token"]
    steps = [
        ("/v1/server/links", {"visitor_token": token, "user_id": "ada-1"}),
        (
            "/v1/server/subjects/correct",
            {"user_id": "ada-1", "field": "email", "value": "ada@example.com"},
        ),
        (
            "/v1/server/records",
            {
                "email": "ada@example.com",
                "decisions": [{"purpose": "email_marketing", "granted": True}],
            },
        ),
    ]
    for url, body in steps:
        response = client.post(url, json=body, headers=bearer(rights_key))
        assert response.status_code in (200, 201), response.get_json()
    return token


def export(client, key, fmt="json", **who):
    return client.get(
        "/v1/server/subjects/export", query_string={**who, "format": fmt}, headers=bearer(key)
    )


def server_check(client, key, purpose, **who):
    return client.get(
        "/v1/server/check", query_string={"purpose": purpose, **who}, headers=bearer(key)
    ).get_json()


def test_export_holds_subject_state_and_history(client, rights_key, person):
    body = export(client, rights_key, email="ada@example.com").get_json()
    assert body["subject"]["email"] == "ada@example.com"
    assert body["subject"]["user_id"] == "ada-1"
    assert body["state"]["email_marketing"]["allowed"] is True
    events = [record["event"] for record in body["history"]]
    assert events == ["decision", "link", "correction", "decision"]
    assert all(len(record["hash"]) == 64 for record in body["history"])


def test_export_by_each_identifier_is_the_same_person(client, rights_key, person):
    by_email = export(client, rights_key, email="ada@example.com").get_json()
    by_user = export(client, rights_key, user_id="ada-1").get_json()
    by_visitor = export(client, rights_key, visitor_token=person).get_json()
    assert (
        by_email["subject"]["pseudonym"]
        == by_user["subject"]["pseudonym"]
        == by_visitor["subject"]["pseudonym"]
    )


def test_export_as_csv(client, rights_key, person):
    response = export(client, rights_key, "csv", user_id="ada-1")
    assert response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    sections = {row["section"] for row in rows}
    assert sections == {"subject", "state", "history"}
    assert {"name": "email", "value": "ada@example.com"}.items() <= next(
        row for row in rows if row["name"] == "email"
    ).items()


def test_export_as_consent_receipts(client, rights_key, person):
    receipts = export(client, rights_key, "receipts", user_id="ada-1").get_json()
    first = receipts[0]
    assert first["version"] == "KI-CR-v1.1.0"
    assert first["pii_principal_id"] and "@" not in first["pii_principal_id"]
    assert {p["purpose"]: p["state"] for p in first["purposes"]}["analytics"] == "granted"
    assert first["policy_version"] == "2026-11-01"


def test_export_of_unknown_person_is_404(client, rights_key):
    response = export(client, rights_key, email="nobody@example.com")
    assert response.status_code == 404


def test_export_needs_the_rights_scope(client, demo_site, make_key, person):
    response = export(client, make_key(demo_site, "read", "write"), user_id="ada-1")
    assert response.status_code == 403


def test_every_export_is_in_the_access_log(app, client, rights_key, person):
    export(client, rights_key, user_id="ada-1")
    with app.app_context():
        entries = db.session.scalars(select(AccessLogEntry)).all()
    actions = [(entry.action, entry.actor.split(":")[0]) for entry in entries]
    assert ("export", "api_key") in actions
    assert ("correct", "api_key") in actions


def test_access_log_is_append_only(app, client, rights_key, person):
    with pytest.raises(Exception, match="append-only"), app.app_context():
        with db.engine.begin() as connection:
            connection.execute(text("DELETE FROM access_log"))


def test_correction_changes_email_without_keeping_the_old_one(client, rights_key, person):
    response = client.post(
        "/v1/server/subjects/correct",
        json={"user_id": "ada-1", "field": "email", "value": "ada.lovelace@example.com"},
        headers=bearer(rights_key),
    )
    assert response.status_code == 200
    record = response.get_json()["record"]
    assert record["event"] == "correction"
    assert record["details"] == {"field": "email", "action": "changed"}
    assert "ada@" not in json.dumps(record)
    assert export(client, rights_key, email="ada@example.com").status_code == 404
    moved = export(client, rights_key, email="ada.lovelace@example.com").get_json()
    assert moved["subject"]["user_id"] == "ada-1"


def test_correction_can_remove_an_identifier(client, rights_key, person):
    response = client.post(
        "/v1/server/subjects/correct",
        json={"user_id": "ada-1", "field": "email", "value": None},
        headers=bearer(rights_key),
    )
    assert response.get_json()["record"]["details"]["action"] == "removed"
    assert export(client, rights_key, user_id="ada-1").get_json()["subject"]["email"] is None


def test_correction_to_anothers_email_is_a_conflict(client, rights_key, person):
    client.post(
        "/v1/server/records",
        json={
            "email": "grace@example.com",
            "decisions": [{"purpose": "email_marketing", "granted": True}],
        },
        headers=bearer(rights_key),
    )
    response = client.post(
        "/v1/server/subjects/correct",
        json={"user_id": "ada-1", "field": "email", "value": "grace@example.com"},
        headers=bearer(rights_key),
    )
    assert response.status_code == 409
    assert response.get_json()["error"] == "conflict"


def test_erasure_denies_every_check_with_reason_erased(client, demo_site, rights_key, person):
    response = client.post(
        "/v1/server/subjects/erase", json={"user_id": "ada-1"}, headers=bearer(rights_key)
    )
    assert response.status_code == 200
    assert response.get_json()["record"]["event"] == "erasure"
    assert check(client, demo_site, "analytics", token=person).get_json()["reason"] == "erased"
    assert server_check(client, rights_key, "analytics", user_id="ada-1")["reason"] == "erased"
    assert (
        server_check(client, rights_key, "email_marketing", email="ada@example.com")["reason"]
        == "erased"
    )
    results = client.post(
        "/v1/server/bulk-check",
        json={"purpose": "email_marketing", "emails": ["ADA@example.com"]},
        headers=bearer(rights_key),
    ).get_json()["results"]
    assert results == [{"email": "ADA@example.com", "allowed": False, "reason": "erased"}]


def test_erasure_removes_identifiers_and_keeps_the_chain(
    app, client, runner, demo_site, rights_key, person
):
    client.post(
        "/v1/server/subjects/erase", json={"email": "ada@example.com"}, headers=bearer(rights_key)
    )
    with app.app_context():
        row = db.session.execute(
            text(
                "SELECT email_digest, email_encrypted, user_id_digest, user_id_encrypted, "
                "erased_at "
                "FROM subjects WHERE erased_at IS NOT NULL"
            )
        ).one()
    assert row[:4] == (None, None, None, None)
    assert runner.invoke(args=["verify", demo_site]).exit_code == 0


ERASED = "(SELECT id FROM subjects WHERE erased_at IS NOT NULL)"
ONE_STATE = "(SELECT subject_id, purpose_id, service FROM current_states LIMIT 1)"


def _state_count(app, subject: str = "subject_id") -> int:
    with app.app_context(), db.engine.connect() as connection:
        return connection.scalar(
            text(f"SELECT COUNT(*) FROM current_states WHERE subject_id = {subject}")
        )


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO current_states (subject_id, purpose_id, service, is_granted,"
        " is_withdrawal, decided_at, expires_at, source)"
        f" SELECT {ERASED}, purpose_id, service, is_granted, is_withdrawal, decided_at,"
        " expires_at, source FROM current_states",
        f"UPDATE current_states SET subject_id = {ERASED}"
        f" WHERE (subject_id, purpose_id, service) = {ONE_STATE}",
    ],
    ids=["added", "moved"],
)
def test_the_database_refuses_a_state_for_an_erased_subject(
    app, client, demo_site, rights_key, person, statement
):
    """The check reads a subject's erasure only where no state answers (migration 0016)."""
    erased = client.post(
        "/v1/server/subjects/erase", json={"user_id": "ada-1"}, headers=bearer(rights_key)
    )
    assert erased.status_code == 200
    submit(client, demo_site, ACCEPT_ALL)  # someone else, with states
    before = _state_count(app)
    with pytest.raises(sqlalchemy.exc.IntegrityError, match="a current state for an erased"):
        with app.app_context(), db.engine.begin() as connection:
            connection.execute(text(statement))
    assert _state_count(app) == before > 0
    assert _state_count(app, ERASED) == 0
    assert check(client, demo_site, "analytics", token=person).get_json()["reason"] == "erased"


def test_a_subject_marked_erased_by_any_writer_loses_its_states(app, client, demo_site):
    """Whoever sets ``erased_at`` (here plain SQL; an instance of the previous release,
    which deleted the states after it, in a rolling upgrade), the states go with it."""
    token = submit(client, demo_site, ACCEPT_ALL).get_json()["visitor_token"]
    other = submit(client, demo_site, ACCEPT_ALL).get_json()["visitor_token"]
    mine = "(SELECT MIN(subject_id) FROM current_states)"
    assert _state_count(app, mine) > 0
    with app.app_context(), db.engine.begin() as connection:
        erased = connection.scalar(text(f"SELECT {mine}"))
        connection.execute(
            text("UPDATE subjects SET erased_at = :now WHERE id = :id"),
            {"now": "2026-12-03 12:00:00.000000", "id": erased},
        )
    assert _state_count(app, str(erased)) == 0
    reasons = {
        check(client, demo_site, "analytics", token=t).get_json()["reason"] for t in (token, other)
    }
    assert reasons == {"erased", "granted"}


def test_erased_visitor_starts_afresh_on_the_next_choice(client, demo_site, rights_key, person):
    client.post(
        "/v1/server/subjects/erase", json={"visitor_token": person}, headers=bearer(rights_key)
    )
    fresh = submit(client, demo_site, ACCEPT_ALL, token=person).get_json()
    assert fresh["visitor_token"] != person
    assert (
        check(client, demo_site, "analytics", token=fresh["visitor_token"]).get_json()["allowed"]
        is True
    )


@pytest.mark.parametrize("key", [None, "choice-while-erased-0001"])
def test_a_choice_whose_subject_is_erased_while_it_waits_gets_its_new_visitors_token(
    app, client, demo_site, rights_key, person, monkeypatch, key
):
    """The subject was read before the chain lock and erased before the batch held it:
    the choice starts a new subject, and its answer (and a retry's) names the new visitor."""
    from consent import ledger

    write_batch = ledger._write_batch

    def erased_first(queue, take):
        monkeypatch.setattr(ledger, "_write_batch", write_batch)
        erase = {"visitor_token": person}
        erased = app.test_client().post(
            "/v1/server/subjects/erase", json=erase, headers=bearer(rights_key)
        )
        assert erased.status_code == 200
        return write_batch(queue, take)

    monkeypatch.setattr(ledger, "_write_batch", erased_first)
    headers = {"Idempotency-Key": key} if key else {}
    fresh = submit(client, demo_site, ACCEPT_ALL, token=person, headers=headers).get_json()
    assert fresh["visitor_token"] != person
    answer = check(client, demo_site, "analytics", token=fresh["visitor_token"]).get_json()
    assert (answer["allowed"], answer["reason"]) == (True, "granted")
    if key:
        retry = submit(client, demo_site, ACCEPT_ALL, token=person, headers=headers)
        assert retry.get_json()["visitor_token"] == fresh["visitor_token"]


def test_erasing_twice_appends_nothing(client, rights_key, person, record_count):
    client.post("/v1/server/subjects/erase", json={"user_id": "ada-1"}, headers=bearer(rights_key))
    after = record_count()
    again = client.post(
        "/v1/server/subjects/erase", json={"visitor_token": person}, headers=bearer(rights_key)
    )
    assert again.status_code == 200
    assert again.get_json()["record"] is None
    assert record_count() == after


def test_cli_export_and_erase(runner, demo_site, person):
    exported = runner.invoke(args=["export", demo_site, "--user-id", "ada-1"])
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.output)["subject"]["email"] == "ada@example.com"
    as_csv = runner.invoke(
        args=["export", demo_site, "--email", "ada@example.com", "--format", "csv"]
    )
    assert as_csv.output.startswith("section,name,value")
    erased = runner.invoke(args=["erase", demo_site, "--user-id", "ada-1", "--yes"])
    assert erased.exit_code == 0
    assert "Erased subject" in erased.output
    assert runner.invoke(args=["export", demo_site, "--user-id", "ada-1"]).exit_code == 1


def test_cli_erase_asks_for_confirmation(runner, demo_site, person):
    result = runner.invoke(args=["erase", demo_site, "--user-id", "ada-1"], input="n\n")
    assert result.exit_code == 1
    assert "Aborted" in result.output


def test_cli_rights_commands_need_exactly_one_identifier(runner, demo_site):
    result = runner.invoke(args=["export", demo_site])
    assert result.exit_code == 2
    assert "exactly one of" in result.output


def test_data_key_rotation_keeps_identifiers_readable(app, client, runner, rights_key, person):
    old_key = app.config["DATA_KEY"]
    app.config["DATA_KEY"] = base64.b64encode(b"n" * 32).decode()
    app.config["OLD_DATA_KEYS"] = [old_key]
    # Before rotation, lookups still match through the old key.
    assert (
        server_check(client, rights_key, "email_marketing", email="ada@example.com")["allowed"]
        is True
    )
    result = runner.invoke(args=["rotate-data-key"])
    assert result.exit_code == 0, result.output
    assert "Re-encrypted 1 subjects" in result.output
    app.config["OLD_DATA_KEYS"] = []
    assert (
        server_check(client, rights_key, "email_marketing", email="ada@example.com")["allowed"]
        is True
    )
    assert (
        export(client, rights_key, user_id="ada-1").get_json()["subject"]["email"]
        == "ada@example.com"
    )
