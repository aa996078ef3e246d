"""Many writers at once, for one subject of one site: one record per 201, one chain.

Threads share one app; two app servers in two OS processes share only the database,
as workers behind a load balancer do. The chain must never fork, on either database.
"""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor

import pytest
from app_process import app_environment, app_servers, post_json
from helpers import ACCEPT_ALL, bearer, check, submit
from integrity import assert_history_consistent
from sqlalchemy import select

from consent.db import db
from consent.models import ConsentRecord, Site

THREADS = 16
SUBMISSIONS_PER_THREAD = 5
PROCESSES = 2
COOKIE_PURPOSES = ("preferences", "analytics", "marketing")


def random_decisions(chance: random.Random) -> list[dict]:
    """Some of the purposes, each granted or refused."""
    chosen = chance.sample(COOKIE_PURPOSES, chance.randint(1, len(COOKIE_PURPOSES)))
    return [{"purpose": purpose, "granted": chance.random() < 0.5} for purpose in chosen]


def assert_each_accepted_submission_recorded_once(app, site_key, accepted: list[dict]):
    """The 201 answers and the stored records are the same set, one for one.

    Returns the pseudonyms the records are about.
    """
    with app.app_context():
        rows = db.session.execute(
            select(ConsentRecord.id, ConsentRecord.record_hash, ConsentRecord.subject_pseudonym)
            .join(Site, Site.id == ConsentRecord.site_id)
            .where(Site.key == site_key)
        ).all()
    assert sorted((record["id"], record["hash"]) for record in accepted) == sorted(
        (row.id, row.record_hash) for row in rows
    )
    return {row.subject_pseudonym for row in rows}


def assert_check_follows_the_latest_record(client, site_key, token, accepted: list[dict]):
    """Per purpose, the check answers what the newest accepted record decided."""
    for purpose in COOKIE_PURPOSES:
        latest = max(
            (
                record
                for record in accepted
                if any(d["purpose"] == purpose for d in record["decisions"])
            ),
            key=lambda record: record["sequence"],
        )
        granted = next(d["granted"] for d in latest["decisions"] if d["purpose"] == purpose)
        answer = check(client, site_key, purpose, token=token).get_json()
        assert answer["allowed"] is granted, (purpose, latest["sequence"], answer)
        assert answer["reason"] in (("granted",) if granted else ("denied", "withdrawn"))


def assert_one_chain_for_one_subject(app, client, site_key, token, accepted: list[dict]):
    """The chain verifies, holds exactly the accepted records, all about one subject,
    and the check answers what the last of them decided."""
    assert assert_history_consistent(app, site_key) == len(accepted)
    assert len(assert_each_accepted_submission_recorded_once(app, site_key, accepted)) == 1
    assert_check_follows_the_latest_record(client, site_key, token, accepted)


def test_threads_recording_for_one_subject_never_fork_the_chain(
    app, client, make_site, dialect, tally
):
    site = make_site()
    first = submit(client, site, ACCEPT_ALL).get_json()
    token = first["visitor_token"]

    def one_thread(number: int) -> list[dict]:
        chance = random.Random(number)
        own_client = app.test_client()
        records = []
        for _ in range(SUBMISSIONS_PER_THREAD):
            response = submit(own_client, site, random_decisions(chance), token=token)
            assert response.status_code == 201, response.get_json()
            assert response.get_json()["visitor_token"] == token
            records.append(response.get_json()["record"])
        return records

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        accepted = [first["record"]] + [
            record for records in pool.map(one_thread, range(THREADS)) for record in records
        ]

    assert len(accepted) == 1 + THREADS * SUBMISSIONS_PER_THREAD
    assert_one_chain_for_one_subject(app, client, site, token, accepted)
    tally[f"concurrency[{dialect}]: threads"] += THREADS
    tally[f"concurrency[{dialect}]: records written by threads"] += len(accepted)


def test_two_app_processes_writing_to_one_site_never_fork_the_chain(
    app, client, make_site, database_url, dialect, tmp_path, tally
):
    site = make_site()
    environment = app_environment(database_url, app.config)
    with app_servers(PROCESSES, environment, tmp_path) as urls:
        status, first = post_json(f"{urls[0]}/v1/sites/{site}/records", {"decisions": ACCEPT_ALL})
        assert status == 201, first
        token = first["visitor_token"]

        def one_thread(number: int) -> list[tuple[int, dict]]:
            chance = random.Random(1000 + number)
            answers = []
            for turn in range(SUBMISSIONS_PER_THREAD):
                # Alternate servers so both processes write throughout.
                url = urls[(number + turn) % PROCESSES]
                answers.append(
                    post_json(
                        f"{url}/v1/sites/{site}/records",
                        {"decisions": random_decisions(chance)},
                        {"X-Consent-Token": token},
                    )
                )
            return answers

        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            answers = [
                answer for answers in pool.map(one_thread, range(THREADS)) for answer in answers
            ]

    assert [status for status, _ in answers] == [201] * len(answers), answers
    accepted = [first["record"]] + [body["record"] for _, body in answers]
    assert_one_chain_for_one_subject(app, client, site, token, accepted)
    tally[f"concurrency[{dialect}]: app processes"] += PROCESSES
    tally[f"concurrency[{dialect}]: records written through {PROCESSES} processes"] += len(accepted)


@pytest.mark.parametrize("route", ["visitor", "person"])
def test_one_idempotency_key_sent_to_two_processes_records_once(
    app, make_site, make_key, record_count, database_url, dialect, tmp_path, tally, route
):
    site = make_site()
    headers = {"Idempotency-Key": "the-one-click-a17c"}
    path, body = f"/v1/sites/{site}/records", {"decisions": ACCEPT_ALL}
    if route == "person":  # the server API, for a person not known before
        headers.update(bearer(make_key(site, "write")))
        path, body = "/v1/server/records", {"user_id": "crm-7", **body}
    environment = app_environment(database_url, app.config)
    with app_servers(PROCESSES, environment, tmp_path) as urls:

        def retry(number: int):
            return post_json(f"{urls[number % PROCESSES]}{path}", body, headers)

        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            answers = list(pool.map(retry, range(THREADS)))

    assert [status for status, _ in answers] == [201] * THREADS, answers
    assert record_count() == 1
    assert len({json.dumps(body, sort_keys=True) for _, body in answers}) == 1
    assert assert_history_consistent(app, site) == 1
    tally[f"concurrency[{dialect}]: same-key retries across processes"] += THREADS
