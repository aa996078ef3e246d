"""How many SQL statements a check and a record cost: a count, not a time.

The check must stay one statement whatever the history holds; a record a small,
fixed number. A regression here fails CI instead of slowing production.
"""

from __future__ import annotations

from contextlib import contextmanager

from helpers import ACCEPT_ALL, check, submit
from sqlalchemy import event

from consent.db import db

#: Transaction control is not a query.
NOT_COUNTED = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "PRAGMA")


@contextmanager
def counting_statements(app):
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if not statement.lstrip().upper().startswith(NOT_COUNTED):
            statements.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_check_is_one_statement(app, client, demo_site):
    decisions = [{"purpose": "analytics", "granted": True, "services": {"matomo": False}}]
    token = submit(client, demo_site, decisions).get_json()["visitor_token"]
    for purpose, service in [("analytics", None), ("analytics", "matomo"), ("necessary", None),
                             ("nope", None)]:
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
        response = submit(client, site, ACCEPT_ALL, token=token,
                          headers={"Idempotency-Key": "k-1"})
    assert response.status_code == 201
    assert len(statements) <= RECORD_BUDGET, "\n".join(statements)


#: Read: site, chain lock, idempotency key, visitor with subject, purposes, policy,
#: current states. Write: chain head, record, current states (batched), idempotent answer.
RECORD_BUDGET = 11
