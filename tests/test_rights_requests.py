"""The rights-request register: from receipt to completion, with a real SMTP server."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from helpers import PERSON_EMAIL, PERSON_USER_ID, bearer, make_person
from sqlalchemy import func, select

import consent.rights_requests
from consent.db import db, now_utc
from consent.models import AccessLogEntry, RightsRequest

LINK = re.compile(r"https://consent\.example(/rights/(?:verify|download)/\S+)")


@pytest.fixture
def key(demo_site, make_key):
    return make_key(demo_site, "read", "write", "rights")


@pytest.fixture
def ada(client, demo_site, key):
    return make_person(client, demo_site, key, email_marketing=True)


def ask(client, site_key, kind="export", email=PERSON_EMAIL):
    return client.post(f"/v1/sites/{site_key}/rights-requests", json={"kind": kind, "email": email})


def link_in(mailbox, address=PERSON_EMAIL, index=-1) -> str:
    body = mailbox.bodies_to(address)[index]
    match = LINK.search(body)
    assert match, body
    return match.group(1)


def confirm(client, mailbox) -> str:
    """Follow the verification link the way a person does; returns the request's reference."""
    path = link_in(mailbox)
    assert "Confirm my request" in client.get(path).text
    confirmed = client.post(path)
    assert confirmed.status_code == 200
    return re.search(r"<code>([^<]+)</code>", confirmed.text).group(1)


def steps_logged(app, reference) -> list[str]:
    with app.app_context():
        return [
            entry.details["step"]
            for entry in db.session.scalars(
                select(AccessLogEntry)
                .where(AccessLogEntry.action == "rights_request")
                .order_by(AccessLogEntry.sequence)
            )
            if entry.details.get("reference") == reference
        ]


def test_an_export_request_runs_from_receipt_to_a_download(
    app, client, runner, demo_site, ada, mailbox
):
    response = ask(client, demo_site)
    assert response.status_code == 202
    received = response.get_json()
    assert received["state"] == "received"
    reference = confirm(client, mailbox)
    assert reference == received["reference"]
    result = runner.invoke(args=["rights-request", "complete", reference])
    assert result.exit_code == 0, result.output
    download = client.get(link_in(mailbox))
    assert download.status_code == 200
    assert download.get_json()["subject"]["user_id"] == PERSON_USER_ID
    assert steps_logged(app, reference) == ["received", "verified", "completed"]
    with app.app_context():
        export = db.session.scalars(
            select(AccessLogEntry).where(AccessLogEntry.action == "export")
        ).all()[-1]
    assert (export.actor, export.reason) == ("person", f"rights request {reference}")


def test_the_due_date_is_a_month_and_three_once_extended(client, runner, demo_site, mailbox):
    received = ask(client, demo_site).get_json()
    listed = runner.invoke(args=["rights-request", "list", demo_site]).output
    assert received["reference"] in listed
    received_at = received["received_at"][:10]
    due = consent.rights_requests.add_months(now_utc(), 1).date().isoformat()
    assert f"received {received_at}  due {due}" in listed
    result = runner.invoke(
        args=["rights-request", "extend", received["reference"], "--reason", "many records"]
    )
    assert result.exit_code == 0, result.output
    later = consent.rights_requests.add_months(now_utc(), 3).date().isoformat()
    assert f"due {later}" in result.output
    assert "We need more time: many records" in mailbox.bodies_to(PERSON_EMAIL)[-1]


def test_a_request_past_its_due_date_is_listed_as_overdue(
    client, runner, demo_site, mailbox, monkeypatch
):
    long_ago = now_utc() - timedelta(days=40)
    monkeypatch.setattr(consent.rights_requests, "now_utc", lambda: long_ago)
    late = ask(client, demo_site).get_json()["reference"]
    monkeypatch.undo()
    fresh = ask(client, demo_site).get_json()["reference"]
    overdue = runner.invoke(args=["rights-request", "list", demo_site, "--overdue"]).output
    assert f"{late}" in overdue and "OVERDUE" in overdue
    assert fresh not in overdue


def test_an_erasure_request_erases_once_completed(client, runner, demo_site, key, ada, mailbox):
    ask(client, demo_site, "erasure")
    reference = confirm(client, mailbox)
    assert runner.invoke(args=["rights-request", "complete", reference]).exit_code == 0
    check = client.get(
        "/v1/server/check",
        query_string={"purpose": "analytics", "user_id": PERSON_USER_ID},
        headers=bearer(key),
    ).get_json()
    assert check["reason"] == "erased"


def test_an_objection_stops_marketing_emails(client, runner, demo_site, key, ada, mailbox):
    ask(client, demo_site, "objection")
    reference = confirm(client, mailbox)
    assert runner.invoke(args=["rights-request", "complete", reference]).exit_code == 0
    check = client.get(
        "/v1/server/check",
        query_string={"purpose": "email_marketing", "email": PERSON_EMAIL},
        headers=bearer(key),
    ).get_json()
    assert (check["allowed"], check["reason"]) == (False, "withdrawn")


def test_an_unverified_request_cannot_be_completed(client, runner, demo_site, mailbox):
    reference = ask(client, demo_site).get_json()["reference"]
    result = runner.invoke(args=["rights-request", "complete", reference])
    assert result.exit_code == 1
    assert "identity is not verified yet" in result.output


def test_a_backend_request_is_verified_by_the_site(app, client, key, ada, mailbox):
    response = client.post(
        "/v1/server/rights-requests",
        json={"kind": "access", "user_id": PERSON_USER_ID},
        headers=bearer(key),
    )
    assert response.status_code == 201
    assert response.get_json()["state"] == "verified"
    assert mailbox.messages == []


def test_a_request_by_email_is_registered_from_the_cli(runner, demo_site, mailbox):
    result = runner.invoke(
        args=["rights-request", "receive", demo_site, "--kind", "access", "--email", PERSON_EMAIL]
    )
    assert result.exit_code == 0, result.output
    assert "/rights/verify/" in mailbox.bodies_to(PERSON_EMAIL)[0]


def test_without_smtp_nothing_is_registered(app, client, demo_site):
    response = ask(client, demo_site)
    assert response.status_code == 503
    assert "email could not be sent" in response.get_json()["message"]
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(RightsRequest)) == 0


@pytest.mark.parametrize("path", ["/rights/verify/forged", "/rights/download/forged"])
def test_a_forged_link_does_nothing(client, path, demo_site):
    page = client.post(path) if "verify" in path else client.get(path)
    assert page.status_code == 404
    assert "This link does not work" in page.text


def test_a_verification_link_does_not_download(client, demo_site, ada, mailbox):
    ask(client, demo_site)
    verify_path = link_in(mailbox)
    download = client.get(verify_path.replace("/verify/", "/download/"))
    assert download.status_code == 404


@pytest.mark.parametrize(
    "body, field",
    [({"kind": "delete", "email": PERSON_EMAIL}, "kind"), ({"kind": "access"}, "email")],
)
def test_a_malformed_request_names_the_field(client, demo_site, body, field):
    response = client.post(f"/v1/sites/{demo_site}/rights-requests", json=body)
    assert response.status_code == 422
    assert field in response.get_json()["errors"]
