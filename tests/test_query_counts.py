"""How many SQL statements a check and a record cost: a count, not a time.

The check must stay one statement whatever the history holds; a record a small,
fixed number. A regression here fails CI instead of slowing production.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager

import psycopg
from helpers import ACCEPT_ALL, check, submit
from sqlalchemy import event

from consent.db import db

#: Transaction control is not a query.
NOT_COUNTED = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "PRAGMA")


@contextmanager
def counting_statements(app):
    """Every statement sent through the app's engine or the fast check's own pool."""
    statements: list[str] = []

    def note(statement: str) -> None:
        if not statement.lstrip().upper().startswith(NOT_COUNTED):
            statements.append(statement)

    def count(conn, cursor, statement, parameters, context, executemany):
        note(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", count)
    fast_check = app.extensions.get("consent.fast_check")
    pool = fast_check.engine.pool if fast_check else None
    if pool is not None:
        # The fast path runs its statement on the driver itself: count there.
        def watch(dbapi_connection, record, proxy):
            _watch_driver(dbapi_connection, note)

        def unwatch(dbapi_connection, record):
            _watch_driver(dbapi_connection, None)

        event.listen(pool, "checkout", watch)
        event.listen(pool, "checkin", unwatch)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)
        if pool is not None:
            event.remove(pool, "checkout", watch)
            event.remove(pool, "checkin", unwatch)


def _watch_driver(dbapi_connection, note) -> None:
    """Have the driver report each statement it sends (``note=None`` stops it)."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.set_trace_callback(note)
        return

    class NotingCursor(psycopg.Cursor):
        def execute(self, query, params=None, **kwargs):
            note(query if isinstance(query, str) else query.as_string(self))
            return super().execute(query, params, **kwargs)

    dbapi_connection.cursor_factory = NotingCursor if note else psycopg.Cursor


def test_checks_take_the_fast_path(app, client, demo_site):
    """The counts above cover the fast path: the check never reaches Flask's dispatch."""
    dispatched = []
    app.before_request(lambda: dispatched.append(1))
    assert check(client, demo_site, "analytics").status_code == 200
    assert dispatched == []
    assert check(client, demo_site, "Analytics").status_code == 200  # not plain: Flask
    assert dispatched == [1]


def test_check_is_one_statement(app, client, demo_site):
    decisions = [{"purpose": "analytics", "granted": True, "services": {"matomo": False}}]
    token = submit(client, demo_site, decisions).get_json()["visitor_token"]
    for purpose, service in [
        ("analytics", None),
        ("analytics", "matomo"),
        ("necessary", None),
        ("nope", None),
    ]:
        with counting_statements(app) as statements:
            response = check(client, demo_site, purpose, token=token, service=service)
        assert response.status_code == 200
        assert len(statements) == 1, statements


def test_check_without_token_is_one_statement(app, client, demo_site):
    with counting_statements(app) as statements:
        check(client, demo_site, "analytics")
    assert len(statements) == 1


def test_returning_visitor_record_costs_a_fixed_number_of_statements(app, client, make_site):
    site = make_site()
    token = submit(client, site, ACCEPT_ALL).get_json()["visitor_token"]
    with counting_statements(app) as statements:
        response = submit(
            client,
            site,
            ACCEPT_ALL,
            token=token,
            headers={"Idempotency-Key": "k-1-retry-0001-of-one"},
        )
    assert response.status_code == 201
    assert len(statements) <= RECORD_BUDGET, "\n".join(statements)


#: Read: site, chain lock, idempotency key, visitor with subject, purposes, policy,
#: current states, webhook endpoints (the outbox). Write: chain head, record, current
#: states (batched), idempotent answer, the visitor's last_seen_at (retention forgets
#: visitors unseen for a consent lifetime).
RECORD_BUDGET = 13
