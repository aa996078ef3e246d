"""Webhooks: outbox in the same transaction, signed posts to a real receiver, retries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from app_process import app_environment
from helpers import ACCEPT_ALL, PERSON_EMAIL, bearer, make_person, submit
from sqlalchemy import func, select
from webhook_receiver import start_receiver

from consent import ledger, webhooks
from consent.db import db
from consent.models import WebhookAttempt, WebhookDelivery, WebhookEvent
from consent.sites import get_site_by_key
from consent.visitors import create_visitor

CONSENT = str(Path(sys.executable).with_name("consent"))


@pytest.fixture
def receiver():
    receiver, server = start_receiver()
    yield receiver
    server.shutdown()
    server.server_close()


@pytest.fixture
def add_webhook(app, runner, receiver):
    """Subscribe the receiver to events of a site through the CLI; keeps the secret."""

    def add(site_key, *events, include_email=False, url=None):
        args = ["add-webhook", site_key, url or receiver.url]
        for event in events:
            args += ["--event", event]
        if include_email:
            args.append("--include-email")
        result = runner.invoke(args=args)
        assert result.exit_code == 0, result.output
        receiver.secret = result.output.rsplit("shown once: ", 1)[1].strip()
        return receiver.secret

    return add


@pytest.fixture
def dispatch(app, runner):
    def run():
        result = runner.invoke(args=["dispatch", "--once"])
        assert result.exit_code == 0, result.output
        return result.output

    return run


def count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def test_a_recorded_choice_reaches_the_endpoint_signed(
    client, demo_site, add_webhook, receiver, dispatch
):
    add_webhook(demo_site, "consent.recorded")
    submit(client, demo_site, ACCEPT_ALL)
    assert "1 delivered" in dispatch()
    [message] = receiver.received
    assert message.is_verified
    assert message.body["type"] == "consent.recorded"
    data = message.body["data"]
    assert data["site"] == demo_site and data["subject"] and data["recorded_at"]
    assert {d["purpose"]: d["granted"] for d in data["decisions"]}["analytics"] is True


def test_a_rolled_back_change_leaves_no_event(app, demo_site, add_webhook):
    add_webhook(demo_site, "consent.recorded")
    with app.test_request_context(method="POST"):
        site = get_site_by_key(demo_site)
        visitor = create_visitor(site)
        ledger.record_decision(site, visitor.subject, ACCEPT_ALL, source="banner")
        db.session.rollback()
    assert count(app, WebhookEvent) == 0
    with app.test_request_context(method="POST"):
        site = get_site_by_key(demo_site)
        visitor = create_visitor(site)
        ledger.record_decision(site, visitor.subject, ACCEPT_ALL, source="banner")
        db.session.commit()
    assert count(app, WebhookEvent) == count(app, WebhookDelivery) == 1


def test_a_refused_submission_emits_nothing(app, client, demo_site, add_webhook):
    add_webhook(demo_site, "consent.recorded")
    assert submit(client, demo_site, [{"purpose": "nope", "granted": True}]).status_code == 422
    assert count(app, WebhookEvent) == 0


def test_withdrawal_is_its_own_event(client, demo_site, add_webhook, receiver, dispatch):
    add_webhook(demo_site, "consent.withdrawn")
    token = submit(client, demo_site, ACCEPT_ALL).get_json()["visitor_token"]
    submit(client, demo_site, [{"purpose": "analytics", "granted": False}], token=token)
    dispatch()
    [message] = receiver.delivered
    assert (message.body["type"], message.body["data"]["purposes"]) == (
        "consent.withdrawn",
        ["analytics"],
    )


@pytest.mark.parametrize("include_email", [False, True])
def test_unsubscribe_carries_an_email_only_when_marked(
    client, demo_site, make_key, add_webhook, receiver, dispatch, include_email
):
    key = make_key(demo_site, "read", "write", "rights")
    make_person(client, demo_site, key, email_marketing=True)
    add_webhook(demo_site, "marketing.unsubscribed", include_email=include_email)
    links = client.post(
        "/v1/server/unsubscribe-links",
        json={"purpose": "email_marketing", "emails": [PERSON_EMAIL]},
        headers=bearer(key),
    ).get_json()["links"]
    client.post(links[0]["url"], data={"List-Unsubscribe": "One-Click"})
    dispatch()
    [message] = receiver.delivered
    assert message.body["data"]["purpose"] == "email_marketing"
    assert message.body["data"].get("email") == (PERSON_EMAIL if include_email else None)


def test_erasure_is_told_and_the_email_is_then_forgotten(
    app, client, demo_site, make_key, add_webhook, receiver, dispatch
):
    key = make_key(demo_site, "read", "write", "rights")
    make_person(client, demo_site, key, email_marketing=True)
    add_webhook(demo_site, "subject.erased", include_email=True)
    erased = client.post(
        "/v1/server/subjects/erase", json={"email": PERSON_EMAIL}, headers=bearer(key)
    )
    assert erased.status_code == 200, erased.get_json()
    dispatch()
    [message] = receiver.delivered
    assert (message.body["type"], message.body["data"]["email"]) == ("subject.erased", PERSON_EMAIL)
    with app.app_context():
        assert db.session.scalar(select(WebhookEvent.email_encrypted)) is None


def test_a_published_policy_is_told(runner, demo_site, add_webhook, receiver, dispatch):
    add_webhook(demo_site, "policy.published")
    assert runner.invoke(args=["add-policy", demo_site, "v9", "--material"]).exit_code == 0
    dispatch()
    [message] = receiver.delivered
    assert message.body["data"]["version"] == "v9"
    assert message.body["data"]["is_material"] is True


def test_each_step_of_a_rights_request_is_told_without_the_email(
    client, demo_site, make_key, add_webhook, receiver, dispatch
):
    add_webhook(
        demo_site, "rights_request.received", "rights_request.completed", include_email=True
    )
    headers = {"Authorization": f"Bearer {make_key(demo_site, 'write', 'rights')}"}
    client.post(
        "/v1/server/records",
        json={"email": "ada@example.com", "decisions": [{"purpose": "analytics", "granted": True}]},
        headers={**headers, "Idempotency-Key": "rights-event-record-1"},
    )
    receipt = client.post(
        "/v1/server/rights-requests",
        json={"kind": "objection", "email": "ada@example.com"},
        headers=headers,
    ).get_json()
    dispatch()
    [message] = receiver.delivered
    assert message.body["type"] == "rights_request.received"
    assert message.body["data"]["reference"] == receipt["reference"]
    assert message.body["data"]["kind"] == "objection"
    assert "ada@example.com" not in json.dumps(message.body)


def test_a_failed_delivery_is_retried_with_the_same_message_id(
    app_with, demo_site, add_webhook, receiver
):
    quick = app_with(WEBHOOK_RETRY_BASE_SECONDS=0, RATELIMIT_ENABLED=False)
    add_webhook(demo_site, "consent.recorded")
    receiver.statuses = [500, 503]
    submit(quick.test_client(), demo_site, ACCEPT_ALL)
    with quick.app_context():
        result = quick.test_cli_runner().invoke(args=["dispatch", "--once"])
    assert result.output.splitlines() == ["1 failed", "1 failed", "1 delivered"]
    assert len({message.message_id for message in receiver.received}) == 1
    assert len(receiver.received) == 3


def test_delivery_gives_up_after_the_last_attempt(app_with, demo_site, add_webhook, receiver):
    quick = app_with(WEBHOOK_RETRY_BASE_SECONDS=0, WEBHOOK_MAX_ATTEMPTS=3, RATELIMIT_ENABLED=False)
    add_webhook(demo_site, "consent.recorded")
    receiver.statuses = [500] * 10
    submit(quick.test_client(), demo_site, ACCEPT_ALL)
    with quick.app_context():
        result = quick.test_cli_runner().invoke(args=["dispatch", "--once"])
        outcomes = db.session.scalars(select(WebhookAttempt.outcome).order_by(WebhookAttempt.id))
        assert list(outcomes) == ["failed", "failed", "gave_up"]
    assert "1 gave_up" in result.output
    assert len(receiver.received) == 3


def test_retries_span_more_than_a_day(app):
    with app.app_context():
        attempts = app.config["WEBHOOK_MAX_ATTEMPTS"]
        waited = sum((webhooks.retry_delay(n) for n in range(1, attempts)), timedelta())
    assert waited >= timedelta(hours=24)


def test_an_unreachable_endpoint_is_a_failed_attempt(app, demo_site, add_webhook, client, dispatch):
    add_webhook(demo_site, "consent.recorded", url="http://127.0.0.1:9/nothing-here")
    submit(client, demo_site, ACCEPT_ALL)
    assert "1 failed" in dispatch()
    with app.app_context():
        delivery = db.session.scalars(select(WebhookDelivery)).one()
        assert (delivery.status, delivery.attempts, delivery.last_error is not None) == (
            "pending",
            1,
            True,
        )


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/x", "javascript:alert(1)", "https://user:pw@example.com/", "/relative"],
)
def test_a_webhook_url_must_be_plain_http(runner, demo_site, url):
    result = runner.invoke(args=["add-webhook", demo_site, url, "--event", "consent.recorded"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: url: ")


def test_several_dispatchers_deliver_each_event_once(
    app, client, demo_site, add_webhook, receiver, tmp_path
):
    add_webhook(demo_site, "consent.recorded")
    for _ in range(30):
        submit(client, demo_site, ACCEPT_ALL)
    env = {**app_environment(app.config["SQLALCHEMY_DATABASE_URI"], app.config)}
    dispatchers = [
        subprocess.Popen(
            [CONSENT, "dispatch", "--once", "--batch", "3"],
            env={**os.environ, **env},
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for dispatcher in dispatchers:
        _, errors = dispatcher.communicate(timeout=120)
        assert dispatcher.returncode == 0, errors
    ids = [message.message_id for message in receiver.delivered]
    assert len(ids) == len(set(ids)) == 30


def test_send_again_posts_the_same_message_once_more(
    app, client, demo_site, add_webhook, receiver, dispatch
):
    add_webhook(demo_site, "consent.recorded")
    submit(client, demo_site, ACCEPT_ALL)
    dispatch()
    with app.app_context():
        webhooks.send_again(db.session.scalars(select(WebhookDelivery)).one())
        db.session.commit()
    dispatch()
    assert [m.message_id for m in receiver.delivered] == [receiver.delivered[0].message_id] * 2


def test_metrics_count_deliveries_by_outcome(app_with, demo_site, add_webhook, receiver):
    quick = app_with(WEBHOOK_RETRY_BASE_SECONDS=0, METRICS_TOKEN="m", RATELIMIT_ENABLED=False)
    add_webhook(demo_site, "consent.recorded")
    receiver.statuses = [500]
    client = quick.test_client()
    submit(client, demo_site, ACCEPT_ALL)
    with quick.app_context():
        quick.test_cli_runner().invoke(args=["dispatch", "--once"])
    page = client.get("/metrics", headers=bearer("m")).get_data(as_text=True)
    assert 'consent_webhook_deliveries_total{outcome="failed"} 1.0' in page
    assert 'consent_webhook_deliveries_total{outcome="delivered"} 1.0' in page
