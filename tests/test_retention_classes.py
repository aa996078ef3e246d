"""Retention of every data class: a purge long after removes each, and verify passes."""

from __future__ import annotations

import re
from datetime import timedelta

import psycopg
import pytest
from helpers import ACCEPT_ALL, PERSON_EMAIL, bearer, submit
from sqlalchemy import func, select, text

import consent.retention
from consent.db import db, now_utc
from consent.models import (
    AccessLogEntry,
    BannerVersion,
    IdempotentRequest,
    RightsRequest,
    Subject,
    Visitor,
)

TABLES = {
    "subjects": Subject,
    "visitors": Visitor,
    "access-log entries": AccessLogEntry,
    "rights requests": RightsRequest,
    "idempotency answers": IdempotentRequest,
    "banner versions": BannerVersion,
}


@pytest.fixture
def shop(client, runner, make_site, make_key, mailbox):
    """A site holding one of each class, all made today."""
    site = make_site("shop", lifetime_days=10, retention_days=30)
    key = make_key(site, "read", "write", "rights")
    client.get(f"/v1/sites/{site}/config")  # archives the banner
    submit(client, site, ACCEPT_ALL, headers={"Idempotency-Key": "first-visit-of-the-shop"})
    person = client.post(
        "/v1/server/records",
        json={"email": PERSON_EMAIL, "decisions": [{"purpose": "analytics", "granted": True}]},
        headers=bearer(key),
    )
    assert person.status_code == 201
    client.get(
        "/v1/server/subjects/export", query_string={"email": PERSON_EMAIL}, headers=bearer(key)
    )
    reference = client.post(
        "/v1/server/rights-requests",
        json={"kind": "access", "email": PERSON_EMAIL},
        headers=bearer(key),
    ).get_json()["reference"]
    assert runner.invoke(args=["rights-request", "complete", reference]).exit_code == 0
    return site


def count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def purge_after(runner, monkeypatch, days: int, *args: str):
    """Run ``consent purge`` with the service's clock moved ``days`` ahead."""
    moment = now_utc() + timedelta(days=days)
    monkeypatch.setattr(consent.retention, "now_utc", lambda: moment)
    result = runner.invoke(args=["purge", *args])
    monkeypatch.undo()
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("name", list(TABLES))
def test_a_purge_long_after_removes_each_class(app, runner, monkeypatch, shop, name):
    before = count(app, TABLES[name])
    assert before > 0
    output = purge_after(runner, monkeypatch, 3 * 365 + 1, shop)
    removed = int(re.search(rf"(\d+) {name}", output).group(1))
    # The purge writes one access-log entry of its own after the cut.
    left = 1 if name == "access-log entries" else 0
    assert (removed, count(app, TABLES[name])) == (before, left)


def test_verify_passes_after_a_purge_of_every_class(runner, monkeypatch, shop):
    purge_after(runner, monkeypatch, 3 * 365 + 1, shop)
    result = runner.invoke(args=["verify", shop])
    assert result.exit_code == 0, result.output
    assert "access log OK, 1 entries." in result.output


def test_a_purge_today_keeps_everything(app, runner, monkeypatch, shop):
    before = {name: count(app, model) for name, model in TABLES.items()}
    output = purge_after(runner, monkeypatch, 0, shop)
    assert f"{shop}: removed 0 subjects, 0 visitors, 0 access-log entries" in output
    assert {name: count(app, model) for name, model in TABLES.items()} == before


def test_idempotency_answers_go_after_a_day(app, runner, monkeypatch, shop):
    output = purge_after(runner, monkeypatch, 2, shop)
    assert "1 idempotency answers" in output
    assert count(app, IdempotentRequest) == 0
    assert count(app, RightsRequest) == 1


def test_a_dry_run_removes_nothing(app, runner, monkeypatch, shop):
    before = {name: count(app, model) for name, model in TABLES.items()}
    output = purge_after(runner, monkeypatch, 3 * 365 + 1, shop, "--dry-run")
    assert f"{shop}: would remove" in output
    assert {name: count(app, model) for name, model in TABLES.items()} == before


def test_the_database_still_refuses_deleting_access_log_entries_no_checkpoint_covers(
    app, runner, monkeypatch, shop
):
    purge_after(runner, monkeypatch, 3 * 365 + 1, shop)
    with pytest.raises(Exception, match="append-only"), app.app_context():
        with db.engine.begin() as connection:
            connection.execute(text("DELETE FROM access_log"))


def test_a_purge_while_another_runs_does_nothing(app, runner, dialect, database_url, shop):
    if dialect != "postgresql":
        pytest.skip("SQLite's write transaction is the lock: a second purge simply waits")
    plain_url = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain_url) as other:
        other.execute("SELECT pg_advisory_xact_lock(%s)", (consent.retention.PURGE_LOCK_KEY,))
        result = runner.invoke(args=["purge", shop])
    assert result.exit_code == 0, result.output
    assert "Another purge is running; nothing done." in result.output


def test_set_retention_changes_a_class_and_prints_them_all(app, runner, make_site):
    site = make_site("shop", lifetime_days=10, retention_days=30)
    result = runner.invoke(args=["set-retention", site, "--access-log-days", "90"])
    assert result.exit_code == 0, result.output
    assert "access log 90 days" in result.output
    assert "idempotency answers 24 hours" in result.output
    with app.app_context():
        assert db.session.scalar(text("SELECT access_log_retention_days FROM sites")) == 90


def test_set_retention_refuses_records_kept_shorter_than_a_choice_stands(runner, make_site):
    site = make_site("shop", lifetime_days=10, retention_days=30)
    result = runner.invoke(args=["set-retention", site, "--records-days", "5"])
    assert result.exit_code == 1
    assert "retention_days: Records must be kept at least as long as a choice stands." in (
        result.output
    )
