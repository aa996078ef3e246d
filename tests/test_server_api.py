"""The server API: checks and records by user id or email, linking.

Keys (missing, wrong, revoked, lacking the scope) and one site's key against another
site's people, on every server route: tests/test_access_control.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from helpers import ACCEPT_ALL, REJECT_ALL, bearer, check, submit
from sqlalchemy import select

from consent.db import db, now_utc
from consent.models import ApiKey


def test_record_for_user_then_check_by_user_id(client, make_site, make_key):
    site = make_site()
    secret = make_key(site, "read", "write")
    response = client.post(
        "/v1/server/records",
        json={"user_id": "user-42", "decisions": ACCEPT_ALL},
        headers=bearer(secret),
    )
    assert response.status_code == 201
    assert response.get_json()["record"]["source"] == "api"
    body = client.get(
        "/v1/server/check",
        query_string={"purpose": "analytics", "user_id": "user-42"},
        headers=bearer(secret),
    ).get_json()
    assert (body["allowed"], body["reason"]) == (True, "granted")
    assert (
        client.get(
            "/v1/server/check",
            query_string={"purpose": "analytics", "user_id": "user-43"},
            headers=bearer(secret),
        ).get_json()["reason"]
        == "no_decision"
    )


def test_email_is_matched_case_insensitively(client, demo_site, make_key):
    secret = make_key(demo_site, "read", "write")
    client.post(
        "/v1/server/records",
        json={
            "email": "Ada@Example.COM",
            "decisions": [{"purpose": "email_marketing", "granted": True}],
        },
        headers=bearer(secret),
    )
    body = client.get(
        "/v1/server/check",
        query_string={"purpose": "email_marketing", "email": " ada@example.com "},
        headers=bearer(secret),
    ).get_json()
    assert body["allowed"] is True


def test_invalid_email_is_refused(client, demo_site, make_key, record_count):
    response = client.post(
        "/v1/server/records",
        json={"email": "not-an-address", "decisions": ACCEPT_ALL},
        headers=bearer(make_key(demo_site, "write")),
    )
    assert response.status_code == 422
    assert "email" in response.get_json()["errors"]
    assert record_count() == 0


def test_exactly_one_identity_is_required(client, make_site, make_key):
    # (A user id with the email to attach to it is the one pair allowed.)
    site = make_site()
    response = client.post(
        "/v1/server/records",
        json={"email": "a@example.com", "visitor_token": "t", "decisions": ACCEPT_ALL},
        headers=bearer(make_key(site, "write")),
    )
    assert response.status_code == 422


def test_identifiers_are_not_stored_in_the_clear(app, client, make_site, make_key):
    from sqlalchemy import text

    from consent.db import db

    site = make_site()
    client.post(
        "/v1/server/records",
        json={"email": "grace@example.com", "decisions": ACCEPT_ALL},
        headers=bearer(make_key(site, "write")),
    )
    with app.app_context():
        rows = db.session.execute(text("SELECT * FROM subjects")).all()
        records = db.session.execute(text("SELECT * FROM consent_records")).all()
    dumped = repr(rows) + repr(records)
    assert "grace" not in dumped


def test_linked_visitor_consent_follows_the_user(client, make_site, make_key):
    site = make_site()
    secret = make_key(site, "read", "write")
    token = submit(client, site, ACCEPT_ALL).get_json()["visitor_token"]
    response = client.post(
        "/v1/server/links",
        json={"visitor_token": token, "user_id": "user-7"},
        headers=bearer(secret),
    )
    assert response.status_code == 201
    assert response.get_json()["record"]["event"] == "link"
    body = client.get(
        "/v1/server/check",
        query_string={"purpose": "analytics", "user_id": "user-7"},
        headers=bearer(secret),
    ).get_json()
    assert body["allowed"] is True


def test_linking_a_second_device_keeps_the_newer_decision(client, make_site, make_key):
    site = make_site()
    secret = make_key(site, "read", "write")
    laptop = submit(client, site, ACCEPT_ALL).get_json()["visitor_token"]
    client.post(
        "/v1/server/links", json={"visitor_token": laptop, "user_id": "u9"}, headers=bearer(secret)
    )
    phone = submit(client, site, REJECT_ALL).get_json()["visitor_token"]
    response = client.post(
        "/v1/server/links", json={"visitor_token": phone, "user_id": "u9"}, headers=bearer(secret)
    )
    adopted = response.get_json()["record"]["decisions"]
    assert {d["purpose"]: d["granted"] for d in adopted} == {
        "analytics": False,
        "marketing": False,
        "preferences": False,
    }
    # Both devices now answer for the same person, with the newer (phone) choice.
    for token in (laptop, phone):
        assert check(client, site, "analytics", token=token).get_json()["reason"] == "denied"


def test_linking_does_not_let_an_older_choice_win(client, make_site, make_key):
    site = make_site()
    secret = make_key(site, "read", "write")
    phone = submit(client, site, REJECT_ALL).get_json()["visitor_token"]
    client.post(
        "/v1/server/records",
        json={"user_id": "u5", "decisions": ACCEPT_ALL},
        headers=bearer(secret),
    )
    client.post(
        "/v1/server/links", json={"visitor_token": phone, "user_id": "u5"}, headers=bearer(secret)
    )
    assert check(client, site, "analytics", token=phone).get_json()["allowed"] is True


def test_a_keys_last_use_is_kept(app, client, make_site, make_key):
    site = make_site()
    secret = make_key(site, "read")
    with app.app_context():
        assert db.session.scalars(select(ApiKey)).one().last_used_at is None
    client.get("/v1/server/check?purpose=analytics&user_id=u-1", headers=bearer(secret))
    with app.app_context():
        used_at = db.session.scalars(select(ApiKey)).one().last_used_at
    assert used_at is not None and now_utc() - used_at < timedelta(minutes=1)


@pytest.mark.parametrize("identity", [{"user_id": "u-42"}, {"email": "Ada@Example.com"}])
def test_server_record_retried_with_idempotency_key_records_once(
    client, make_site, make_key, record_count, identity
):
    site = make_site()
    headers = {**bearer(make_key(site, "write")), "Idempotency-Key": "crm-sync-17-4be1d07a"}
    body = {**identity, "decisions": ACCEPT_ALL}
    first = client.post("/v1/server/records", json=body, headers=headers)
    second = client.post("/v1/server/records", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.get_json() == first.get_json()
    assert record_count() == 1
    other = client.post(
        "/v1/server/records", headers=headers, json={**identity, "decisions": REJECT_ALL}
    )
    assert other.status_code == 422 and "Idempotency-Key" in other.get_json()["errors"]
    assert record_count() == 1
