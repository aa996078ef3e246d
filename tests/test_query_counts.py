"""What a check and a record cost the database: statements and round trips, counted.

The check must stay one statement (one round trip) whatever the history holds; a
record a small, fixed number. Counted at the driver, so nothing hides: on PostgreSQL
from libpq's own trace of the messages sent (``BEGIN``, ``COMMIT`` and pings included),
on SQLite from the library's trace of each statement run. A regression here fails CI
instead of slowing production.
"""

from __future__ import annotations

import re
import sqlite3
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from helpers import ACCEPT_ALL, check, hold_first_batch, submit, submit_at_once
from psycopg import pq
from sqlalchemy import event

from consent.db import db

#: Transaction control: a round trip, not a query.
TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")
#: A message the client sent, in a libpq trace: its type and what follows.
NOTING = threading.Lock()
LIBPQ_MESSAGE = re.compile(r"F\t\d+\t(\w+)\t? ?(.*)")


@dataclass
class Traffic:
    """What went to the database: the queries, and every round trip (queries included)."""

    statements: list[str] = field(default_factory=list)
    round_trips: int = 0

    def note(self, statement: str) -> None:
        """One statement run by itself: one round trip, and one query unless control."""
        with NOTING:  # batches: several threads at once
            self.round_trips += 1
            if not statement.lstrip().upper().startswith(TRANSACTION_CONTROL):
                self.statements.append(statement)

    def read_libpq_trace(self, lines) -> None:
        """Count from a libpq trace: a simple ``Query`` or a ``Sync`` ends a round trip,
        each ``Bind`` runs a statement (several per ``Sync`` in pipeline mode)."""
        parsed = {}
        for line in lines:
            sent = LIBPQ_MESSAGE.match(line)  # a statement's later lines match nothing
            if sent is None:
                continue
            message, rest = sent.groups()
            if message == "Query":
                self.note(rest.strip('"'))
            elif message == "Sync":
                with NOTING:
                    self.round_trips += 1
            elif message == "Parse":
                name, _, text = rest.partition(" ")
                parsed[name] = text
            elif message == "Bind":
                statement = parsed.get(rest.split(" ")[1], rest).strip('"')
                if not statement.lstrip().upper().startswith(TRANSACTION_CONTROL):
                    self.statements.append(statement)  # a COMMIT in a pipeline is no query

    def __str__(self) -> str:
        return f"{self.round_trips} round trips:\n" + "\n".join(self.statements)


@contextmanager
def counting(app):
    """Every statement and round trip through the app's engine and the fast check's pool."""
    traffic = Traffic()
    with app.app_context():
        engines = [db.engine]
    fast_path = app.extensions.get("consent.fast_path")
    if fast_path is not None:
        engines.append(fast_path.engine)  # the fast path runs its statement on the driver
    traces = {}

    def watch(dbapi_connection, record, proxy):
        if isinstance(dbapi_connection, sqlite3.Connection):
            dbapi_connection.set_trace_callback(_sent_once(traffic.note))
            return
        trace = traces[id(dbapi_connection)] = tempfile.TemporaryFile("w+")
        dbapi_connection.pgconn.trace(trace.fileno())
        dbapi_connection.pgconn.set_trace_flags(
            pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE
        )

    def unwatch(dbapi_connection, record):
        if isinstance(dbapi_connection, sqlite3.Connection):
            dbapi_connection.set_trace_callback(None)
            return
        dbapi_connection.pgconn.untrace()
        with traces.pop(id(dbapi_connection)) as trace:
            trace.seek(0)
            traffic.read_libpq_trace(trace)

    pings = []
    for engine in engines:
        event.listen(engine.pool, "checkout", watch)
        event.listen(engine.pool, "checkin", unwatch)
        # A pre-ping runs before the checkout event: count it where it is sent.
        engine.dialect.do_ping = _counted(engine.dialect.do_ping, pings)
    try:
        yield traffic
    finally:
        for engine in engines:
            event.remove(engine.pool, "checkout", watch)
            event.remove(engine.pool, "checkin", unwatch)
            del engine.dialect.do_ping
        traffic.round_trips += len(pings)


def _sent_once(note):
    """SQLite's trace names a statement again for each trigger program it runs (Python
    reports the statement, not the trigger): count what the app sent, once."""
    last = [None]

    def noted(statement: str) -> None:
        if statement != last[0]:
            note(statement)
        last[0] = statement

    return noted


def _counted(ping, pings: list):
    def counted_ping(dbapi_connection):
        pings.append(1)
        return ping(dbapi_connection)

    return counted_ping


def test_checks_take_the_fast_path(app, client, demo_site):
    """The counts above cover the fast path: the check never reaches Flask's dispatch."""
    dispatched = []
    app.before_request(lambda: dispatched.append(1))
    assert check(client, demo_site, "analytics").status_code == 200
    assert dispatched == []
    assert check(client, demo_site, "Analytics").status_code == 200  # not plain: Flask
    assert dispatched == [1]


@pytest.mark.parametrize(
    ("purpose", "service"),
    [("analytics", None), ("analytics", "matomo"), ("necessary", None), ("nope", None)],
)
def test_check_is_one_statement_in_one_round_trip(app, client, demo_site, purpose, service):
    decisions = [{"purpose": "analytics", "granted": True, "services": {"matomo": False}}]
    token = submit(client, demo_site, decisions).get_json()["visitor_token"]
    with counting(app) as traffic:
        response = check(client, demo_site, purpose, token=token, service=service)
    assert response.status_code == 200
    assert (len(traffic.statements), traffic.round_trips) == (1, 1), str(traffic)


def test_check_without_token_is_one_statement_in_one_round_trip(app, client, demo_site):
    with counting(app) as traffic:
        check(client, demo_site, "analytics")
    assert (len(traffic.statements), traffic.round_trips) == (1, 1), str(traffic)


def test_counts_include_a_ping(app, client, demo_site):
    """The counter sees pings: were ``pool_pre_ping`` turned on, the budgets would fail."""
    with app.app_context():
        engine = db.engine
    submit(client, demo_site, ACCEPT_ALL)  # a pooled connection to check out again
    with counting(app) as traffic:
        with engine.connect() as connection:
            engine.dialect.do_ping(connection.connection.dbapi_connection)
    assert traffic.round_trips >= 1


def test_a_first_visit_stays_within_its_budget(app, client, make_site, dialect):
    site = make_site()
    submit(client, site, ACCEPT_ALL)  # the site's first record, and warm pools
    with counting(app) as traffic:
        response = submit(
            client, site, ACCEPT_ALL, headers={"Idempotency-Key": "key-of-a-first-visit-0001"}
        )
    assert response.status_code == 201
    assert len(traffic.statements) <= FIRST_VISIT_STATEMENTS[dialect], str(traffic)
    assert traffic.round_trips <= FIRST_VISIT_ROUND_TRIPS[dialect], str(traffic)


def test_a_returning_visitor_stays_within_its_budget(app, client, make_site, dialect):
    site = make_site()
    token = submit(client, site, ACCEPT_ALL).get_json()["visitor_token"]
    with counting(app) as traffic:
        response = submit(
            client,
            site,
            ACCEPT_ALL,
            token=token,
            headers={"Idempotency-Key": "key-of-a-returning-visitor-0001"},
        )
    assert response.status_code == 201
    assert len(traffic.statements) <= RETURNING_VISITOR_STATEMENTS[dialect], str(traffic)
    assert traffic.round_trips <= RETURNING_VISITOR_ROUND_TRIPS[dialect], str(traffic)


@pytest.mark.parametrize("size", [4, 16])
def test_a_batch_costs_its_rows_in_a_fixed_number_of_round_trips(
    app, client, make_site, monkeypatch, dialect, size
):
    """The same statements for any number of members (an insert takes up to
    ``consent.driver.ROWS_PER_INSERT`` rows: here 17 members, 51 current states), and on
    PostgreSQL the same round trips."""
    site = make_site()
    submit(client, site, ACCEPT_ALL)  # warm pools
    batches = hold_first_batch(monkeypatch)
    with counting(app) as traffic:
        answers = submit_at_once(app, site, [{"json": {"decisions": ACCEPT_ALL}}] * (size + 1))
    assert [answer.status_code for answer in answers] == [201] * (size + 1)
    # Everyone at once, or the held one (whoever came before its lock), then the others.
    assert len(batches) <= 2 and sum(batches) == size + 1, batches
    batch_count = len(batches)
    statements = batch_count * BATCH_STATEMENTS[dialect]
    assert len(traffic.statements) <= statements, str(traffic)
    # SQLite runs each statement in process: a "round trip" each, and BEGIN and COMMIT.
    round_trips = {"postgresql": 0, "sqlite": statements}[dialect]
    assert traffic.round_trips <= round_trips + batch_count * BATCH_ROUND_TRIPS, str(traffic)


#: Nothing read before the lock (the site's settings, purposes, policy versions and
#: webhook endpoints come from the process's copy, ``consent.site_facts``). Under the
#: chain lock (in the batch's own transaction): the lock with the site's config_version
#: (is the copy current?), the idempotency key. Written, a statement a table, each with
#: every row of the batch (``consent.driver``): subject, record, then visitor, the current
#: states (a row per purpose), the answer kept for retries, each row with its id
#: (``consent.driver.ReservedIds``: on SQLite, one statement reads the largest ids; on
#: PostgreSQL the process keeps ids taken ahead from the sequences); the database moves
#: the chain head itself (migration 0014). On PostgreSQL, after BEGIN, the lock and the
#: key's earlier answer go in one round trip (the server reads the key once it holds the
#: lock), the writes in one more with the COMMIT; SQLite counts a round trip per statement.
FIRST_VISIT_STATEMENTS = {"postgresql": 7, "sqlite": 8}
FIRST_VISIT_ROUND_TRIPS = {"postgresql": 3, "sqlite": 10}
#: As a first visit, with the visitor's subject read before the lock (on the fast path's
#: autocommit pool), its erasure and current states under it, and its last_seen_at
#: updated instead of the subject and visitor inserts.
RETURNING_VISITOR_STATEMENTS = {"postgresql": 8, "sqlite": 9}
RETURNING_VISITOR_ROUND_TRIPS = {"postgresql": 5, "sqlite": 11}
#: First visits without an Idempotency-Key, as members of a batch: their requests read
#: nothing. The batch reads the lock, then inserts the subjects, the records, the
#: visitors and the current states, a statement each, in one round trip on PostgreSQL
#: (BEGIN before, COMMIT with the inserts).
BATCH_STATEMENTS = {"postgresql": 5, "sqlite": 6}
BATCH_ROUND_TRIPS = 3


#: Tables that grow with visitors and records: no statement the record or check paths
#: run may read one whole.
GROWING_TABLES = (
    "consent_records",
    "subjects",
    "visitors",
    "current_states",
    "idempotent_requests",
    "identifiers",
)


def test_recording_and_checking_search_growing_tables_by_index(
    app, client, demo_site, monkeypatch, dialect
):
    """SQLite picks its plans without statistics, from the statement's shape alone: a
    row-value ``IN`` of two rows or more scanned every idempotency key kept, in every
    batch. Each statement of a batch of keyed first visits, a retry, a returning visitor
    whose purpose-wide choices replace two services' states, and a check is planned again
    here; none may scan a growing table. PostgreSQL plans both shapes alike."""
    if dialect != "sqlite":
        pytest.skip("PostgreSQL plans a row-value IN as the ORs of its rows")
    services = [
        {"purpose": "analytics", "granted": True, "services": {"matomo": False}},
        {"purpose": "marketing", "granted": True, "services": {"adnetwork": False}},
    ]
    keyed = [
        {
            "json": {"decisions": services},
            "headers": {"Idempotency-Key": f"first-visit-key-{n:04d}"},
        }
        for n in range(3)
    ]
    batches = hold_first_batch(monkeypatch)
    with counting(app) as traffic:
        answers = submit_at_once(app, demo_site, keyed)
        assert [a.status_code for a in answers] == [201] * 3, [a.get_json() for a in answers]
        assert max(batches) >= 2, batches  # a batch read several keys' answers at once
        token = answers[0].get_json()["visitor_token"]
        retry = submit(client, demo_site, services, headers=keyed[0]["headers"])
        assert retry.headers["Idempotent-Replayed"] == "true"
        assert submit(client, demo_site, ACCEPT_ALL, token=token).status_code == 201
        assert check(client, demo_site, "analytics", token=token).get_json()["allowed"]
    with app.app_context():
        connection = db.engine.raw_connection()
        try:
            scans = {
                statement: plan
                for statement in traffic.statements
                if not statement.lstrip().upper().startswith(("INSERT", "PRAGMA"))
                for plan in [connection.execute(f"EXPLAIN QUERY PLAN {statement}").fetchall()]
                if any(
                    re.match(rf"SCAN (TABLE )?{table}\b", detail)
                    for *_, detail in plan
                    for table in GROWING_TABLES
                )
            }
        finally:
            connection.close()
    assert any("DELETE FROM current_states" in statement for statement in traffic.statements)
    assert not scans, scans
