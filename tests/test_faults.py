"""Faults: the database gone, read-only or full; retries; a writer killed mid-stream.

Every fault ends the same way: a JSON answer that names it (never a 500 page), nothing
half-written, a chain that verifies, and an app that recovers on its own once the
database does. PostgreSQL is never touched: an outage is a cut proxy in front of it.
"""

from __future__ import annotations

import functools
import os
import random
import shutil
import signal
import sqlite3
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import sqlalchemy.exc
from app_process import app_environment, start
from flask import Flask, current_app
from helpers import ACCEPT_ALL, bearer, check, submit
from integrity import assert_history_consistent
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from tcp_proxy import CuttableProxy

from consent import create_app
from consent.db import db, describe_database_error

ORIGIN = "https://shop.example"


def sibling_app(app: Flask, database_url: str, **settings) -> Flask:
    """Another app object with ``app``'s secrets, on ``database_url``."""
    return create_app(
        {
            "TESTING": True,
            "SECRET_KEY": app.config["SECRET_KEY"],
            "DATA_KEY": app.config["DATA_KEY"],
            "DATABASE_URL": database_url,
            **settings,
        }
    )


def dispose(app: Flask) -> None:
    """Close the app's pooled connections, as a restarted worker would have none."""
    with app.app_context():
        db.engine.dispose()


@dataclass
class Outage:
    """An app whose way to the database the test can cut and restore."""

    app: Flask
    cut: Callable[[], None]
    restore: Callable[[], None]

    @property
    def client(self):
        return self.app.test_client()


@pytest.fixture
def outage(app, database_url, dialect):
    """A second app on the same database, behind a proxy (PostgreSQL) or a path (SQLite)."""
    if dialect == "postgresql":
        url = make_url(database_url)
        proxy = CuttableProxy(url.host, url.port or 5432)
        proxied = url.set(host="127.0.0.1", port=proxy.port)
        faulty = sibling_app(
            app,
            proxied.render_as_string(hide_password=False),
            SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {"connect_timeout": 3}},
        )
        yield Outage(faulty, proxy.cut, proxy.restore)
        proxy.close()
        dispose(faulty)
        return

    # SQLite has no connection to lose: the file goes away (a disk unmounted), and in
    # its place is something that cannot be opened.
    path = Path(make_url(database_url).database)
    unplugged = path.parent / "unplugged"
    faulty = sibling_app(app, database_url)

    def cut():
        for each in (app, faulty):  # open connections would keep the file's inode
            dispose(each)
        unplugged.mkdir()
        for file in path.parent.glob(f"{path.name}*"):
            file.rename(unplugged / file.name)
        path.mkdir()

    def restore():
        path.rmdir()
        for file in unplugged.iterdir():
            file.rename(path.parent / file.name)
        unplugged.rmdir()

    yield Outage(faulty, cut, restore)
    if unplugged.exists():
        restore()
    dispose(faulty)


def assert_database_error(response, status: int, naming: str) -> dict:
    """The one JSON error shape, naming the problem; never an HTML page."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json, response.get_data(as_text=True)
    body = response.get_json()
    assert naming in body["message"], body
    return body


# --- the database unreachable ------------------------------------------------------


def test_check_fails_closed_while_the_database_is_down_and_recovers(
    outage, client, make_site, dialect, tally
):
    site = make_site(origins=[ORIGIN])
    token = submit(client, site, ACCEPT_ALL).get_json()["visitor_token"]
    assert check(outage.client, site, "analytics", token=token).get_json()["allowed"] is True

    outage.cut()
    for headers in ({}, {"Origin": ORIGIN}):  # the widget's check carries an Origin
        response = outage.client.get(
            f"/v1/sites/{site}/check",
            query_string={"purpose": "analytics"},
            headers={"X-Consent-Token": token, **headers},
        )
        body = assert_database_error(response, 503, "cannot be reached")
        assert (body["allowed"], body["reason"]) == (False, "unavailable")
        assert response.headers["Retry-After"]
    outage.restore()

    answer = check(outage.client, site, "analytics", token=token)
    assert (answer.status_code, answer.get_json()["allowed"]) == (200, True)
    tally[f"faults[{dialect}]: outages survived"] += 1


def test_record_answers_503_while_the_database_is_down_and_recovers(
    outage, make_site, make_key, record_count, dialect, tally
):
    site = make_site(origins=[ORIGIN])
    key = make_key(site, "read", "write")
    outage.cut()
    refused = [
        outage.client.post(
            f"/v1/sites/{site}/records", json={"decisions": ACCEPT_ALL}, headers={"Origin": ORIGIN}
        ),
        outage.client.get(f"/v1/sites/{site}/config"),
        outage.client.post(
            "/v1/server/records",
            headers=bearer(key),
            json={"user_id": "u-1", "decisions": ACCEPT_ALL},
        ),
        outage.client.get(
            "/v1/server/check",
            headers=bearer(key),
            query_string={"purpose": "analytics", "user_id": "u-1"},
        ),
    ]
    for response in refused:
        assert_database_error(response, 503, "cannot be reached")
    outage.restore()

    assert record_count() == 0
    response = submit(outage.client, site, ACCEPT_ALL)
    assert response.status_code == 201
    assert record_count() == 1
    tally[f"faults[{dialect}]: outages survived"] += 1
    tally[f"faults[{dialect}]: requests refused with 503 during outages"] += len(refused)


def test_retries_with_one_key_after_an_outage_record_once(
    outage, make_site, record_count, dialect, tally
):
    site = make_site()
    headers = {"Idempotency-Key": "retry-me-7e41b9d0"}
    outage.cut()
    assert submit(outage.client, site, ACCEPT_ALL, headers=headers).status_code == 503
    outage.restore()

    def retry(_):
        return submit(outage.app.test_client(), site, ACCEPT_ALL, headers=headers)

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(retry, range(8)))
    assert [answer.status_code for answer in answers] == [201] * 8
    assert len({answer.get_json()["record"]["hash"] for answer in answers}) == 1
    assert sum("Idempotent-Replayed" not in answer.headers for answer in answers) == 1
    assert record_count() == 1
    tally[f"faults[{dialect}]: concurrent retries of one key"] += 8


def drop_idle_connections(outage: Outage, site: str, token: str) -> None:
    """Leave a connection in each pool (check and records), then drop them unseen."""
    assert check(outage.client, site, "analytics", token=token).status_code == 200
    outage.cut()
    outage.restore()  # a database restart nobody was asking during: the pools hold the dead


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_check_on_a_connection_dropped_while_idle_answers_from_a_new_one(
    outage, make_site, dialect, tally
):
    site = make_site()
    token = submit(outage.client, site, ACCEPT_ALL).get_json()["visitor_token"]
    drop_idle_connections(outage, site, token)

    answer = check(outage.client, site, "analytics", token=token)
    assert (answer.status_code, answer.get_json()["allowed"]) == (200, True)
    tally[f"faults[{dialect}]: dead pooled connections replaced"] += 1


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
# A returning visitor's request reads its subject first; a first-time visitor's first
# statement is its batch's chain-head lock, sent on the driver (``consent.driver``).
@pytest.mark.parametrize("visitor", ["returning", "first-time"])
def test_a_record_on_a_connection_dropped_while_idle_answers_503_and_its_retry_records_once(
    outage, make_site, record_count, dialect, tally, visitor
):
    site = make_site()
    token = submit(outage.client, site, ACCEPT_ALL).get_json()["visitor_token"]
    drop_idle_connections(outage, site, token)
    headers = {"Idempotency-Key": "dropped-while-idle-91c3"}
    token = token if visitor == "returning" else None

    assert_database_error(
        submit(outage.client, site, ACCEPT_ALL, token=token, headers=headers), 503, "reached"
    )
    retried = submit(outage.client, site, ACCEPT_ALL, token=token, headers=headers)
    assert retried.status_code == 201, retried.get_json()
    assert record_count() == 2
    tally[f"faults[{dialect}]: dead pooled connections replaced"] += 1


# SQLite has no connection to lose; its commit-time fault is the full disk, below.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_connection_lost_at_commit_records_nothing_and_the_retry_records_once(
    outage, make_site, record_count, dialect, tally
):
    site = make_site()
    headers = {"Idempotency-Key": "lost-at-commit-2c5f"}
    armed = [True]

    def cut_before_commit(session):
        if armed[0] and current_app._get_current_object() is outage.app:
            armed[0] = False
            outage.cut()

    event.listen(Session, "before_commit", cut_before_commit)
    try:
        response = submit(outage.client, site, ACCEPT_ALL, headers=headers)
    finally:
        event.remove(Session, "before_commit", cut_before_commit)
    assert armed == [False]
    assert_database_error(response, 503, "cannot be reached")
    assert record_count() == 0
    outage.restore()

    first, again = (submit(outage.client, site, ACCEPT_ALL, headers=headers) for _ in range(2))
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert record_count() == 1
    assert_history_consistent(outage.app, site)
    tally[f"faults[{dialect}]: connections lost at commit"] += 1


# --- a writer killed mid-stream ------------------------------------------------------

KILL_ROUNDS = 3
WRITER_THREADS = 4


def test_killing_a_writer_mid_stream_leaves_no_half_written_record(
    app, client, runner, make_site, make_key, database_url, dialect, tmp_path, tally
):
    site = make_site()
    key = make_key(site, "write", "rights")
    environment = app_environment(database_url, app.config)
    chance = random.Random(7)
    accepted = 0
    for round_number in range(KILL_ROUNDS):
        log_path = tmp_path / f"writer-{round_number}.log"
        writer = start("write", site, key, str(WRITER_THREADS), env=environment, log_path=log_path)
        kill_after = chance.randint(10, 40)
        seen = 0
        try:
            while seen < kill_after:
                line = writer.stdout.readline()
                assert line, f"the writer stopped by itself:\n{log_path.read_text()}"
                status = int(line.split()[1])
                assert status in (200, 201, 404), line  # 404: erasing an unknown user
                accepted += status == 201
                seen += 1
        finally:
            os.kill(writer.pid, signal.SIGKILL)
            writer.wait()
            writer.stdout.close()
        assert writer.returncode == -signal.SIGKILL

    count = assert_history_consistent(app, site)
    assert count >= accepted  # the last writes may have committed unreported
    result = runner.invoke(args=["verify", site])
    assert result.exit_code == 0, result.output
    assert f"OK, {count} records" in result.output
    assert submit(client, site, ACCEPT_ALL).status_code == 201
    assert_history_consistent(app, site)
    tally[f"faults[{dialect}]: writer processes killed mid-stream"] += KILL_ROUNDS
    tally[f"faults[{dialect}]: records written by killed writers"] += count


# --- read-only and full --------------------------------------------------------------


def make_file_read_only(path: Path):
    """chmod 0444; as root, whom file modes do not stop, the immutable attribute too.

    Returns the function that undoes it.
    """
    mode = path.stat().st_mode
    path.chmod(0o444)
    if os.geteuid() != 0:
        return lambda: path.chmod(mode)
    if shutil.which("chattr") is None:
        path.chmod(mode)
        pytest.skip("running as root, which ignores file modes, and chattr is missing")
    result = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        path.chmod(mode)
        pytest.skip(f"running as root, which ignores file modes; chattr: {result.stderr}")

    def undo():
        subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(mode)

    return undo


@pytest.fixture
def read_only_database(app, database_url, dialect):
    """Make the database read-only (a write-protected file; a read-only PostgreSQL).

    Yields the function that makes it writable again.
    """
    if dialect == "postgresql":
        name = make_url(database_url).database

        def set_read_only(value: str) -> None:
            # From another database: in this one, even ALTER DATABASE would be refused.
            other = make_url(database_url).set(database="postgres")
            with psycopg.connect(
                other.render_as_string(hide_password=False), autocommit=True
            ) as admin:
                admin.execute(f"ALTER DATABASE {name} SET default_transaction_read_only = {value}")

        set_read_only("on")
        undo = functools.partial(set_read_only, "off")
    else:
        undo = make_file_read_only(Path(make_url(database_url).database))
    dispose(app)  # new connections, as after a failover or a restart, see the change
    done = []

    def make_writable():
        if not done:
            done.append(undo())

    yield make_writable
    make_writable()


def test_read_only_database_answers_reads_and_refuses_writes_by_name(
    app, client, runner, make_site, record_count, dialect, tally, request
):
    site = make_site(origins=[ORIGIN])
    token = submit(client, site, ACCEPT_ALL).get_json()["visitor_token"]
    make_writable = request.getfixturevalue("read_only_database")

    assert check(client, site, "analytics", token=token).get_json()["allowed"] is True
    refused = submit(client, site, ACCEPT_ALL, token=token, headers={"Origin": ORIGIN})
    assert_database_error(refused, 503, "read-only")
    assert refused.headers["Access-Control-Allow-Origin"] == ORIGIN  # the widget can read it
    assert record_count() == 1

    result = runner.invoke(args=["create-site", "another", "Another site"])
    assert result.exit_code == 1
    assert "The database is read-only" in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    result = runner.invoke(args=["verify", site])
    assert result.exit_code == 0
    assert f"{site}: OK, 1 records." in result.output
    assert "The results were not kept: The database is read-only" in result.output

    make_writable()  # and the same app, without a restart, writes again
    assert submit(client, site, ACCEPT_ALL, token=token).status_code == 201
    assert record_count() == 2
    assert_history_consistent(app, site)
    tally[f"faults[{dialect}]: read-only databases survived"] += 1


def limit_sqlite_pages(app) -> None:
    """Let no connection grow the file: SQLite then answers SQLITE_FULL, as on a full disk."""

    def limit(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        pages = cursor.execute("PRAGMA page_count").fetchone()[0]
        cursor.execute(f"PRAGMA max_page_count = {pages}")
        cursor.close()

    with app.app_context():
        event.listen(db.engine, "connect", limit)
        db.engine.dispose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_full_database_refuses_writes_with_507_and_writes_nothing(
    app, client, runner, make_site, record_count, tally
):
    site = make_site()
    token = submit(client, site, ACCEPT_ALL).get_json()["visitor_token"]
    limit_sqlite_pages(app)

    statuses = []
    while 507 not in statuses and len(statuses) < 500:
        response = submit(client, site, ACCEPT_ALL, token=token)
        statuses.append(response.status_code)
    assert set(statuses) == {201, 507}
    body = assert_database_error(response, 507, "full")
    assert body["error"] == "insufficient_storage"
    assert record_count() == 1 + statuses.count(201)
    assert check(client, site, "analytics", token=token).get_json()["allowed"] is True

    for number in range(50):  # a small site may still fit where a record did not
        result = runner.invoke(args=["create-site", f"another-{number}", "Another site"])
        if result.exit_code:
            break
    assert (result.exit_code, isinstance(result.exception, SystemExit)) == (1, True)
    assert "Error: The database is full (no space left)" in result.output
    assert "Traceback" not in result.output
    assert assert_history_consistent(app, site) == record_count()
    tally["faults[sqlite]: writes refused by a full database"] += 1


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MiB tmpfs: a real disk that fills up (needs root with mount rights)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


def fill(directory: Path) -> Path:
    """Write a file until the disk is full; returns it (delete it to free the space)."""
    filler = directory / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(descriptor, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(descriptor)
    return filler


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_disk_full_at_commit_answers_507_and_recovers(
    app, make_site, database_url, tiny_disk, tally
):
    site = make_site()
    dispose(app)  # every connection closed: the file is whole, without its WAL
    on_disk = tiny_disk / "consent.sqlite"
    shutil.copyfile(make_url(database_url).database, on_disk)
    app_on_disk = sibling_app(app, f"sqlite:///{on_disk}")
    client = app_on_disk.test_client()
    try:
        token = submit(client, site, ACCEPT_ALL).get_json()["visitor_token"]
        filler = fill(tiny_disk)

        # SQLite writes a WAL transaction at commit: the disk fills there, after the view.
        statuses = [submit(client, site, ACCEPT_ALL, token=token).status_code for _ in range(5)]
        assert statuses == [507] * 5
        assert check(client, site, "analytics", token=token).status_code == 200

        filler.unlink()
        assert submit(client, site, ACCEPT_ALL, token=token).status_code == 201
        assert assert_history_consistent(app_on_disk, site) == 2
    finally:
        dispose(app_on_disk)
    tally["faults[sqlite]: full disks survived"] += 1


@pytest.mark.parametrize(
    ("error", "status", "naming"),
    [
        (psycopg.errors.DiskFull, 507, "full"),
        (psycopg.errors.ReadOnlySqlTransaction, 503, "read-only"),
        (psycopg.errors.LockNotAvailable, 503, "busy"),
        (psycopg.OperationalError, 503, "cannot be reached"),
        (psycopg.errors.UniqueViolation, 409, "same data"),
    ],
)
def test_postgresql_errors_are_named(error, status, naming):
    """Full and read-only are not safely made on the shared server: check the naming."""
    wrapped = sqlalchemy.exc.OperationalError("INSERT ...", {}, error("simulated"))
    assert describe_database_error(wrapped)[0] == status
    assert naming in describe_database_error(wrapped)[1]


def test_a_race_on_a_unique_key_is_a_conflict_on_sqlite_too():
    """A real SQLite constraint error: 409 and try again, not "cannot be reached"."""
    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE TABLE person (email TEXT UNIQUE)")
    connection.execute("INSERT INTO person VALUES ('ada@example.com')")
    with pytest.raises(sqlite3.IntegrityError) as raised:
        connection.execute("INSERT INTO person VALUES ('ada@example.com')")
    wrapped = sqlalchemy.exc.IntegrityError("INSERT ...", {}, raised.value)
    assert describe_database_error(wrapped) == (
        409,
        "Another request changed the same data at once: nothing was written, try again.",
    )
