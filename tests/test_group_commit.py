"""Group commit: one site's concurrent submissions appended in shared transactions.

Threads of one app form batches (a slowed first batch makes the others queue behind
it, so the batches are sure to form); two app processes append to one chain, each
process its own batches, the chain lock between them. Whatever the batching, each 201
is one record, the chain never forks, a member that fails fails alone, and a process
killed mid-batch leaves whole batches or none.
"""

from __future__ import annotations

import http.client
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from app_process import app_environment, app_servers, post_json, start
from helpers import ACCEPT_ALL, REJECT_ALL, hold_first_batch, submit, submit_at_once
from integrity import assert_history_consistent
from sqlalchemy import select, text

from consent import driver, ledger
from consent.db import db
from consent.models import ConsentRecord, Visitor

THREADS = 12
PROCESSES = 2


@pytest.fixture
def batches(monkeypatch) -> list[int]:
    """The sizes of the batches appended, the first held back so that the others queue."""
    return hold_first_batch(monkeypatch)


def test_concurrent_first_visits_share_a_transaction_and_each_is_recorded_once(
    app, make_site, record_count, batches, dialect, tally
):
    site = make_site()
    answers = submit_at_once(app, site, [{"json": {"decisions": ACCEPT_ALL}}] * THREADS)

    assert [answer.status_code for answer in answers] == [201] * THREADS
    assert max(batches) > 1, batches  # batches formed
    assert sum(batches) == THREADS
    assert record_count() == THREADS
    assert len({answer.get_json()["visitor_id"] for answer in answers}) == THREADS
    assert assert_history_consistent(app, site) == THREADS
    tally[f"group commit[{dialect}]: largest batch"] = max(
        tally[f"group commit[{dialect}]: largest batch"], max(batches)
    )


@pytest.mark.parametrize("rows_per_insert", [driver.ROWS_PER_INSERT, 3])
def test_each_member_of_a_batch_is_answered_with_its_own_record(
    app, client, make_site, batches, monkeypatch, rows_per_insert
):
    """Also when a batch's rows take several inserts (their ids come back in no set order)."""
    monkeypatch.setattr(driver, "ROWS_PER_INSERT", rows_per_insert)
    site = make_site()
    bodies = [{"json": {"decisions": ACCEPT_ALL if n % 2 else REJECT_ALL}} for n in range(8)]
    answers = submit_at_once(app, site, bodies)

    assert max(batches) > 1, batches
    with app.app_context():
        rows = db.session.execute(select(ConsentRecord.record_hash, ConsentRecord.id))
        stored_ids = {record_hash: record_id for record_hash, record_id in rows}
    for body, answer in zip(bodies, answers, strict=True):
        record = answer.get_json()["record"]
        assert record["decisions"] == sorted(
            body["json"]["decisions"], key=lambda decision: decision["purpose"]
        )
        assert record["id"] == stored_ids[record["hash"]]
        token = answer.get_json()["visitor_token"]
        me = client.get(f"/v1/sites/{site}/me", headers={"X-Consent-Token": token}).get_json()
        assert [record["hash"] for record in me["history"]] == [answer.get_json()["record"]["hash"]]
    assert_history_consistent(app, site)  # each current state names its own record


def test_a_key_used_for_another_submission_fails_alone_in_its_batch(
    app, client, make_site, record_count, batches
):
    site = make_site()
    key = {"Idempotency-Key": "used-once-already-5d2e"}
    assert submit(client, site, ACCEPT_ALL, headers=key).status_code == 201
    bodies = [{"json": {"decisions": ACCEPT_ALL}}] * 6 + [
        {"json": {"decisions": REJECT_ALL}, "headers": key}
    ]
    answers = submit_at_once(app, site, bodies)

    assert max(batches) > 1, batches
    assert [answer.status_code for answer in answers] == [201] * 6 + [422]
    assert answers[-1].get_json()["errors"] == {
        "Idempotency-Key": ["This key was used for a different submission."]
    }
    assert record_count() == 1 + 6
    assert_history_consistent(app, site)


def test_retries_of_one_key_in_one_batch_record_once(app, make_site, record_count, batches):
    site = make_site()
    key = {"Idempotency-Key": "one-click-many-tries-77aa"}
    answers = submit_at_once(app, site, [{"json": {"decisions": ACCEPT_ALL}, "headers": key}] * 6)

    assert [answer.status_code for answer in answers] == [201] * 6
    assert sum("Idempotent-Replayed" not in answer.headers for answer in answers) == 1
    assert len({answer.get_json()["record"]["hash"] for answer in answers}) == 1
    assert record_count() == 1


def test_a_batch_with_more_keys_than_a_query_names_finds_every_earlier_answer(
    app, make_site, record_count, batches, monkeypatch
):
    """The keys' answers are read ``ROWS_PER_CONDITION`` at a time (SQLite's expression depth):
    here 2, for batches of 5 keys, each key answered once and replayed once."""
    monkeypatch.setattr(ledger, "ROWS_PER_CONDITION", 2)
    site = make_site()
    bodies = [
        {"json": {"decisions": ACCEPT_ALL}, "headers": {"Idempotency-Key": f"chunked-key-{n:04d}"}}
        for n in range(5)
    ]
    first = submit_at_once(app, site, bodies)
    again = submit_at_once(app, site, bodies)

    assert max(batches) >= 3, batches  # one batch read its keys in two queries or more
    assert [answer.status_code for answer in first + again] == [201] * 10
    assert ["Idempotent-Replayed" in answer.headers for answer in again] == [True] * 5
    assert [answer.get_json() for answer in again] == [answer.get_json() for answer in first]
    assert record_count() == 5


def test_a_batch_appends_each_sites_submissions_to_that_sites_chain(
    app, make_site, record_count, batches, dialect
):
    """One batch takes every site's waiting submissions; each chain holds its own
    site's records, and one key sent to two sites records on both."""
    sites = [make_site() for _ in range(3)]
    key = {"Idempotency-Key": "one-key-sent-to-every-site-9f1c"}
    bodies = [{"site": site, "json": {"decisions": ACCEPT_ALL}, "headers": key} for site in sites]
    bodies += [{"site": site, "json": {"decisions": REJECT_ALL}} for site in sites * 3]
    answers = submit_at_once(app, None, bodies)

    assert [answer.status_code for answer in answers] == [201] * 12
    assert not any("Idempotent-Replayed" in answer.headers for answer in answers)
    assert record_count() == 12
    assert [assert_history_consistent(app, site) for site in sites] == [4, 4, 4]
    assert max(batches) > 4, batches  # more than any one site sent: across sites


def test_a_chain_locked_elsewhere_holds_up_no_other_site(app, make_site, record_count, dialect):
    """PostgreSQL: while one site's chain is locked by another transaction (a long purge,
    another process's batch), the other sites' submissions are appended; that site's
    wait for its lock, then are appended too. (SQLite's writer locks every site.)"""
    if dialect != "postgresql":
        pytest.skip("SQLite's write lock is the whole database's")
    held, others = make_site(), [make_site(), make_site()]
    # Left in this order, the lock is released before the pool waits for its threads.
    with ThreadPoolExecutor(8) as pool, app.app_context(), db.engine.connect() as locker:
        locker.execute(
            text(
                "SELECT 1 FROM chain_heads JOIN sites ON sites.id = chain_heads.site_id "
                "WHERE sites.key = :key FOR UPDATE OF chain_heads"
            ),
            {"key": held},
        )
        waiting = pool.submit(submit, app.test_client(), held, ACCEPT_ALL)
        time.sleep(0.2)  # its batch has met the lock
        sent = [pool.submit(submit, app.test_client(), site, REJECT_ALL) for site in others * 3]
        assert [answer.result(timeout=10).status_code for answer in sent] == [201] * 6
        assert not waiting.done()
        locker.rollback()  # the lock is released
        assert waiting.result(timeout=10).status_code == 201
    assert record_count() == 7
    assert [assert_history_consistent(app, site) for site in [held, *others]] == [1, 3, 3]


def test_a_member_the_database_refuses_fails_alone(
    app, make_site, record_count, batches, monkeypatch
):
    """A batch refused whole (one member's row breaks a constraint) is retried one by
    one: the member at fault gets its error, the others their records."""
    site = make_site()
    taken = submit(app.test_client(), site, ACCEPT_ALL).get_json()["visitor_id"]
    issued = iter([taken])
    make_id = ledger.new_opaque_id
    # The first visitor id issued from now on collides with one that exists.
    monkeypatch.setattr(ledger, "new_opaque_id", lambda: next(issued, None) or make_id())
    answers = submit_at_once(app, site, [{"json": {"decisions": ACCEPT_ALL}}] * 6)

    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [201] * 5 + [409], [answer.get_json() for answer in answers]
    assert record_count() == 1 + 5
    assert_history_consistent(app, site)


def test_two_processes_appending_first_visits_to_one_site_never_fork_the_chain(
    app, make_site, record_count, database_url, dialect, tmp_path, tally
):
    site = make_site()
    environment = app_environment(database_url, app.config)
    with app_servers(PROCESSES, environment, tmp_path) as urls:

        def send(number: int):
            return post_json(
                f"{urls[number % PROCESSES]}/v1/sites/{site}/records", {"decisions": ACCEPT_ALL}
            )

        with ThreadPoolExecutor(max_workers=2 * THREADS) as pool:
            answers = list(pool.map(send, range(4 * THREADS)))

    assert [status for status, _ in answers] == [201] * len(answers), answers
    assert record_count() == len(answers)
    assert assert_history_consistent(app, site) == len(answers)
    tally[f"group commit[{dialect}]: first visits through {PROCESSES} processes"] += len(answers)


def test_a_process_killed_mid_batch_leaves_whole_batches_only(
    app, make_site, record_count, database_url, tmp_path, tally, dialect
):
    site = make_site()
    environment = app_environment(database_url, app.config)
    accepted = []
    server = start("serve", env=environment, log_path=tmp_path / "server.log")
    url = f"http://127.0.0.1:{server.stdout.readline().strip()}"
    with ThreadPoolExecutor(THREADS) as pool:

        def send(number: int):
            status, body = post_json(f"{url}/v1/sites/{site}/records", {"decisions": ACCEPT_ALL})
            if status == 201:
                accepted.append(body["record"]["hash"])

        futures = [pool.submit(send, number) for number in range(200)]
        deadline = time.monotonic() + 30
        while len(accepted) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.send_signal(signal.SIGKILL)  # batches in flight: some committed, some not
        server.wait()
        server.stdout.close()
        for future in futures:
            try:
                future.result()
            except (OSError, http.client.HTTPException):
                pass  # the connection the killed server held, maybe mid-answer

    count = record_count()
    assert len(accepted) <= count < 200
    # Every record, with its subject, visitor and states: no half of any batch.
    assert assert_history_consistent(app, site) == count
    with app.app_context():
        visitors = db.session.scalars(select(Visitor.visitor_id)).all()
    assert len(visitors) == count
    tally[f"group commit[{dialect}]: servers killed mid-batch"] += 1


def test_sqlite_batches_wait_for_another_process_writing_turn_until_it_ends(
    app, make_site, record_count, database_url, dialect, tmp_path
):
    """SQLite: writers queue on a lock the kernel hands over (``writers_turn``), not in
    SQLite's sleeping busy handler; a holder killed mid-turn lets the next one go."""
    if dialect != "sqlite":
        pytest.skip("PostgreSQL's writers queue on each chain head's row lock")
    site = make_site()
    environment = app_environment(database_url, app.config)
    holder = start("hold-writers-turn", env=environment, log_path=tmp_path / "holder.log")
    try:
        assert holder.stdout.readline().strip() == "held"
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(submit, app.test_client(), site, ACCEPT_ALL)
            time.sleep(0.5)
            assert not answer.done()  # the database itself is not locked: only the turn
            assert record_count() == 0
            holder.send_signal(signal.SIGKILL)
            assert answer.result(timeout=30).status_code == 201
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert record_count() == 1


def test_sqlite_writers_go_without_turns_where_the_lock_file_cannot_be_opened(
    app, client, make_site, record_count, database_url, dialect
):
    """The turn only spares waits: a lock file that cannot be opened (here a folder in
    its place; a read-only folder alike) leaves writers to SQLite's own lock."""
    if dialect != "sqlite":
        pytest.skip("PostgreSQL's writers queue on each chain head's row lock")
    site = make_site()
    Path(database_url.removeprefix("sqlite:///") + "-writers").mkdir()
    assert submit(client, site, ACCEPT_ALL).status_code == 201
    assert record_count() == 1


def test_a_batch_commit_that_meets_an_aborted_transaction_is_not_taken_as_written(app, dialect):
    """PostgreSQL answers a COMMIT in an aborted transaction with ROLLBACK and no error:
    the driver's queued COMMIT reads the answer, so nobody is told their record was kept."""
    if dialect != "postgresql":
        pytest.skip("SQLite's batches commit through the Core")
    from sqlalchemy.exc import DBAPIError

    from consent.driver import sent_together

    with app.app_context(), db.engine.connect() as connection, connection.begin():
        cursor = connection.connection.driver_connection.cursor()
        with pytest.raises(Exception, match="division by zero"):
            cursor.execute("SELECT 1 / 0")  # the transaction is aborted, unnoticed
        with pytest.raises(DBAPIError, match="rolled back"):
            with sent_together(connection, commit=True):
                pass


def test_a_chain_found_locked_elsewhere_keeps_to_its_own_queue_for_a_while(
    app, make_site, monkeypatch, dialect
):
    """PostgreSQL: once a site's chain was found locked by another transaction, the
    site's next submissions wait for its lock in its own queue (for
    ``CONTENDED_SECONDS``) rather than spend a transaction of every site's batch on it."""
    if dialect != "postgresql":
        pytest.skip("SQLite's write lock is the whole database's")
    from consent import group_commit

    site = make_site()
    submit(app.test_client(), site, ACCEPT_ALL)  # warm pools
    queues = []
    write_batch = ledger._write_batch

    def noted(queue, take):
        queues.append(queue)
        return write_batch(queue, take)

    monkeypatch.setattr(ledger, "_write_batch", noted)
    monkeypatch.setattr(group_commit, "CONTENDED_SECONDS", 60.0)
    with ThreadPoolExecutor(1) as pool, app.app_context(), db.engine.connect() as locker:
        locker.execute(
            text(
                "SELECT 1 FROM chain_heads JOIN sites ON sites.id = chain_heads.site_id "
                "WHERE sites.key = :key FOR UPDATE OF chain_heads"
            ),
            {"key": site},
        )
        waiting = pool.submit(submit, app.test_client(), site, ACCEPT_ALL)
        time.sleep(0.2)  # its batch has met the lock
        locker.rollback()
        assert waiting.result(timeout=10).status_code == 201
    site_id = queues[-1]
    assert queues == [ledger.EVERY_SITE, site_id]  # found locked, then waited for it
    assert submit(app.test_client(), site, REJECT_ALL).status_code == 201
    monkeypatch.setattr(group_commit, "CONTENDED_SECONDS", 0.0)
    assert submit(app.test_client(), site, REJECT_ALL).status_code == 201

    assert queues[2:] == [site_id, ledger.EVERY_SITE]
