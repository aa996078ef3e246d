"""The migrations build exactly the schema the models describe."""

from __future__ import annotations

import hashlib

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from helpers import ACCEPT_ALL, submit
from sqlalchemy import func, select, text, update

from consent.db import db
from consent.models import CurrentState, IdempotentRequest, Visitor


def test_migrated_schema_matches_the_models(app):
    with app.app_context(), db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, db.metadata)
    assert differences == []


def test_migrations_are_at_head(app, runner):
    result = runner.invoke(args=["db", "check"])
    assert result.exit_code == 0, result.output


def test_keys_stored_before_digests_still_replay_after_the_upgrade(app, client, make_site):
    site = make_site()
    key = "stored-before-0010-as-sent"
    first = submit(client, site, ACCEPT_ALL, headers={"Idempotency-Key": key})
    with app.app_context():
        downgrade(revision="0010-1")
        db.session.execute(update(IdempotentRequest).values(key=key))  # as before 0010
        db.session.commit()
        upgrade()
        assert db.session.scalars(select(IdempotentRequest.key)).all() == [
            hashlib.sha256(key.encode()).hexdigest()
        ]
    retry = submit(client, site, ACCEPT_ALL, headers={"Idempotency-Key": key})
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.get_json() == first.get_json()


def test_sqlite_keeps_the_checks_tables_in_key_order_across_upgrades(
    app, client, make_site, dialect
):
    """Migration 0015: WITHOUT ROWID tables on SQLite, their rows and index kept both ways."""
    if dialect != "sqlite":
        pytest.skip("SQLite's rowid tables only")
    site = make_site()
    assert submit(client, site, ACCEPT_ALL).status_code == 201

    def tables():
        rows = db.session.execute(
            text(
                "SELECT name, sql FROM sqlite_master WHERE type IN ('table', 'index')"
                " AND tbl_name IN ('visitors', 'current_states')"
            )
        ).all()
        counts = [
            db.session.scalar(select(func.count()).select_from(t)) for t in (Visitor, CurrentState)
        ]
        db.session.rollback()  # the migration's connection writes next
        return {name: "WITHOUT ROWID" in (sql or "") for name, sql in rows}, counts

    with app.app_context():
        shipped, counts = tables()
        assert shipped == {
            "visitors": True,
            "current_states": True,
            "ix_visitors_subject_id": False,
        }
        downgrade(revision="0014")
        # Rowid tables again, each with the index SQLite keeps for a key of its own.
        assert tables() == (
            {
                **dict.fromkeys(shipped, False),
                "sqlite_autoindex_visitors_1": False,
                "sqlite_autoindex_current_states_1": False,
            },
            counts,
        )
        upgrade()
        assert tables() == (shipped, counts)
