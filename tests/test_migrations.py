"""The migrations build exactly the schema the models describe."""

from __future__ import annotations

import hashlib

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from helpers import ACCEPT_ALL, submit
from sqlalchemy import select, update

from consent.db import db
from consent.models import IdempotentRequest


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
