"""Retention: old records go, the chain stays verifiable, records in force stay."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy.exc
from helpers import ACCEPT_ALL, REJECT_ALL, check, submit
from sqlalchemy import select, text, update

import consent.chain
from consent.db import db, now_utc
from consent.models import ConsentRecord, Site


@pytest.fixture
def at(monkeypatch):
    """Record as if it were ``days`` ago: the service's clock, moved back."""

    def move(days: int):
        moment = now_utc() - timedelta(days=days)
        monkeypatch.setattr(consent.chain, "now_utc", lambda: moment)

    yield move
    monkeypatch.undo()


def sequences(app) -> list[int]:
    with app.app_context():
        return db.session.scalars(
            select(ConsentRecord.sequence).order_by(ConsentRecord.sequence)
        ).all()


@pytest.fixture
def aged_site(client, make_site, at):
    """Records 1-3 from 100, 90 and 80 days ago; record 4 from today. Lifetime 10 days."""
    site = make_site(lifetime_days=10, retention_days=30)
    at(100)
    first = submit(client, site, ACCEPT_ALL).get_json()["visitor_token"]
    at(90)
    submit(client, site, REJECT_ALL)
    at(80)
    submit(client, site, REJECT_ALL, token=first)
    at(0)
    recent = submit(client, site, ACCEPT_ALL).get_json()["visitor_token"]
    return site, first, recent


def test_dry_run_prints_and_removes_nothing(app, runner, aged_site):
    site, _, _ = aged_site
    result = runner.invoke(args=["purge", site, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would remove 3 records (#1 to #3" in result.output
    assert "stopped before #4 (retention)" in result.output
    assert sequences(app) == [1, 2, 3, 4]


def test_purge_removes_old_records_and_verify_still_passes(app, runner, aged_site):
    site, _, _ = aged_site
    result = runner.invoke(args=["purge", site])
    assert result.exit_code == 0, result.output
    assert "removed 3 records" in result.output
    # What remains: the recent record and the purge's own record.
    assert sequences(app) == [4, 5]
    verified = runner.invoke(args=["verify", site])
    assert verified.exit_code == 0, verified.output
    assert "OK, 2 records" in verified.output


def test_purge_changes_no_answer_to_allowed(client, runner, aged_site):
    site, first, recent = aged_site

    def reasons():
        return [
            check(client, site, "analytics", token=t).get_json()["reason"] for t in (first, recent)
        ]

    assert reasons() == ["expired", "granted"]
    runner.invoke(args=["purge", site])
    # The first visitor, unseen for longer than a choice stands, is forgotten: unknown now.
    assert reasons() == ["no_decision", "granted"]


def test_purge_twice_removes_nothing_more(app, runner, aged_site):
    site, _, _ = aged_site
    runner.invoke(args=["purge", site])
    result = runner.invoke(args=["purge", site])
    assert "nothing to remove" in result.output
    assert sequences(app) == [4, 5]


def test_purge_stops_before_a_record_in_force(app, client, runner, make_site, at):
    site = make_site(lifetime_days=200, retention_days=200)
    at(160)
    visitor = submit(client, site, ACCEPT_ALL).get_json()["visitor_token"]
    at(155)
    submit(client, site, REJECT_ALL, token=visitor)  # #2: in force until day +45
    at(150)
    submit(client, site, ACCEPT_ALL)  # #3: in force too
    at(0)
    with app.app_context():
        db.session.execute(
            update(Site).where(Site.key == site).values(lifetime_days=100, retention_days=120)
        )
        db.session.commit()
    result = runner.invoke(args=["purge", site])
    assert "removed 1 records (#1 to #1" in result.output
    assert "stopped before #2 (in force)" in result.output
    assert sequences(app)[:2] == [2, 3]
    assert runner.invoke(args=["verify", site]).exit_code == 0


def test_database_still_refuses_deleting_records_no_checkpoint_covers(app, runner, aged_site):
    site, _, _ = aged_site
    runner.invoke(args=["purge", site])
    with pytest.raises(sqlalchemy.exc.DatabaseError, match="append-only"), app.app_context():
        with db.engine.begin() as connection:
            connection.execute(text("DELETE FROM consent_records WHERE sequence = 4"))


def test_tampering_after_a_purge_is_still_caught(app, runner, aged_site, dialect):
    site, _, _ = aged_site
    runner.invoke(args=["purge", site])
    with app.app_context(), db.engine.begin() as connection:
        if dialect == "postgresql":
            connection.execute(text("ALTER TABLE consent_records DISABLE TRIGGER USER"))
        else:
            connection.execute(text("DROP TRIGGER consent_records_no_update"))
        connection.execute(
            text("UPDATE consent_records SET is_gpc = NOT is_gpc WHERE sequence = 4")
        )
    result = runner.invoke(args=["verify", site])
    assert result.exit_code == 1
    assert "BROKEN at record #4" in result.output


def test_forged_checkpoint_is_caught(app, runner, aged_site):
    site, _, _ = aged_site
    with app.app_context(), db.engine.begin() as connection:
        site_id = connection.execute(
            text("SELECT id FROM sites WHERE key = :k"), {"k": site}
        ).scalar_one()
        record_hash = connection.execute(
            text("SELECT record_hash FROM consent_records WHERE sequence = 1")
        ).scalar_one()
        connection.execute(
            text(
                "INSERT INTO chain_checkpoints (site_id, sequence, record_hash, records_removed, "
                "purged_at, signature) VALUES (:s, 1, :h, 1, :t, :sig)"
            ),
            {"s": site_id, "h": record_hash, "t": now_utc(), "sig": "0" * 64},
        )
        # With a checkpoint in place the database lets the old records go...
        connection.execute(text("DELETE FROM consent_records WHERE sequence = 1"))
    result = runner.invoke(args=["verify", site])
    # ...but the forgery cannot be signed without the app's secret.
    assert result.exit_code == 1
    assert "signature is invalid" in result.output
