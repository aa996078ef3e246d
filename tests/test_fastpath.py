"""The check's fast path answers exactly as Flask would, and leaves it everything else.

One database, two apps: the service as shipped and the same with ``FAST_CHECK`` off,
so every answer below is compared with Flask's own, byte for byte (the CSP nonce aside).
"""

from __future__ import annotations

import json
import re

import pytest
from helpers import ACCEPT_ALL, REJECT_ALL, check, submit
from sqlalchemy import func, select

from consent.db import db
from consent.models import ConsentRecord

#: As the test app: the limiter on, out of reach.
HIGH_CHECK_LIMIT = {"RATELIMIT_CHECK": "100000/minute"}


@pytest.fixture
def flask_only(app_with):
    """The same service on the same database, every check answered by Flask."""
    return app_with(FAST_CHECK=False, **HIGH_CHECK_LIMIT)


def _comparable(response) -> tuple:
    headers = sorted(
        (name, re.sub(r"'nonce-[^']+'", "'nonce-N'", value))
        for name, value in response.headers.items()
        if name != "X-Request-Id"  # a new one each time, on both paths
    )
    return response.status_code, headers, response.get_data()


def test_fast_and_flask_answers_are_the_same(app, client, flask_only, demo_site, make_site):
    site = demo_site
    decisions = [
        {"purpose": "analytics", "granted": True, "services": {"matomo": False}},
        {"purpose": "marketing", "granted": False},
    ]
    token = submit(client, site, decisions).get_json()["visitor_token"]
    other_site = make_site()
    foreign = submit(client, other_site, ACCEPT_ALL).get_json()["visitor_token"]
    withdrawn = submit(client, site, ACCEPT_ALL).get_json()["visitor_token"]
    submit(client, site, [{"purpose": "marketing", "granted": False}], token=withdrawn)
    slow = flask_only.test_client()
    cases = [
        ("analytics", None, token, {}),
        ("analytics", "matomo", token, {}),
        ("analytics", "unknown-service", token, {}),
        ("marketing", None, token, {}),
        ("marketing", None, withdrawn, {}),
        ("necessary", None, token, {}),
        ("preferences", None, token, {}),
        ("nope", None, token, {}),
        ("analytics", None, None, {}),
        ("analytics", None, token, {"Origin": "http://localhost:5000"}),
        ("analytics", None, token, {"Origin": "https://evil.example"}),
        ("analytics", None, token, {"Origin": "http://localhost"}),  # the service's own
        ("analytics", None, token, {"X-Forwarded-Proto": "https"}),
        ("analytics", None, foreign, {}),  # 403, from Flask on both
        ("analytics", None, "forged", {}),  # 401
        ("Analytics", None, token, {}),  # not plain: Flask on both
    ]
    answered_fast = 0
    for purpose, service, visitor_token, headers in cases:
        query = {"purpose": purpose, **({"service": service} if service else {})}
        request = {
            "query_string": query,
            "headers": {**headers, **({"X-Consent-Token": visitor_token} if visitor_token else {})},
        }
        for base_url in ("http://localhost/", "https://localhost/"):
            fast = client.get(f"/v1/sites/{site}/check", base_url=base_url, **request)
            flask = slow.get(f"/v1/sites/{site}/check", base_url=base_url, **request)
            assert _comparable(fast) == _comparable(flask), (purpose, service, headers)
            answered_fast += fast.status_code == 200
    assert answered_fast >= 26
    https = client.get(f"/v1/sites/{site}/check?purpose=analytics", base_url="https://localhost/")
    assert https.headers["Strict-Transport-Security"].startswith("max-age=")


def test_unknown_site_and_odd_queries_go_to_flask(app, client, demo_site):
    dispatched = []
    app.before_request(lambda: dispatched.append(1))
    for url, status in [
        ("/v1/sites/no-such-site/check?purpose=analytics", 404),
        ("/v1/sites/demo/check", 422),
        ("/v1/sites/demo/check?purpose=", 422),
        ("/v1/sites/demo/check?purpose=analytics&purpose=x", 200),
        ("/v1/sites/demo/check?purpose=analytics&extra=1", 200),
        ("/v1/sites/demo/check/?purpose=analytics", 404),
    ]:
        assert client.get(url).status_code == status, url
    assert client.head("/v1/sites/demo/check?purpose=analytics").status_code == 200
    assert client.post("/v1/sites/demo/check?purpose=analytics", json={}).status_code == 405
    assert len(dispatched) == 8


def test_one_allowance_whichever_path_answers(app_with, demo_site):
    """Fast and Flask answers count on one counter: the fourth check is refused."""
    client = app_with(RATELIMIT_CHECK="3/minute").test_client()
    assert check(client, "demo", "analytics").status_code == 200  # fast
    assert check(client, "demo", "Analytics").status_code == 200  # Flask
    assert check(client, "demo", "analytics").status_code == 200  # fast
    refused = check(client, "demo", "analytics")
    assert refused.status_code == 429
    assert refused.get_json()["allowed"] is False
    assert refused.get_json()["reason"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1
    assert check(client, "demo", "Analytics").status_code == 429


#: What differs between two answers to the same submission: who and where in the chain.
VOLATILE = {"visitor_token", "visitor_id", "id", "sequence", "recorded_at", "previous_hash", "hash"}


def _comparable_record(response) -> tuple:
    def blank(value):
        if isinstance(value, dict):
            return {k: "*" if k in VOLATILE else blank(v) for k, v in value.items()}
        return [blank(v) for v in value] if isinstance(value, list) else value

    status, headers, _ = _comparable(response)
    headers = [(n, "*" if n == "Content-Length" else v) for n, v in headers]
    return status, headers, blank(response.get_json())


@pytest.fixture
def dispatched(app) -> list:
    """One entry per request that reached Flask's dispatch (clear it to start counting)."""
    reached: list = []
    app.before_request(lambda: reached.append(1))
    return reached


@pytest.fixture
def flask_records(app_with):
    """The same service on the same database, every record answered by Flask."""
    return app_with(FAST_RECORD=False, RATELIMIT_RECORD="100000/minute").test_client()


def test_fast_and_flask_records_are_the_same(
    app, client, flask_records, dispatched, demo_site, make_site
):
    """Each case goes to both paths, in the same state; the fast one answers the plain ones."""
    served = client.get(f"/v1/sites/{demo_site}/config").get_json()["config_hash"]
    token = submit(client, demo_site, ACCEPT_ALL).get_json()["visitor_token"]
    foreign = submit(client, make_site(), ACCEPT_ALL).get_json()["visitor_token"]
    refusal = [{"purpose": "marketing", "granted": False}]
    dispatched.clear()
    cases = [
        ({"decisions": ACCEPT_ALL}, {}),
        ({"decisions": refusal, "language": "en"}, {"X-Consent-Token": token}),
        ({"decisions": ACCEPT_ALL, "config_hash": served}, {}),
        ({"decisions": ACCEPT_ALL}, {"Origin": "http://localhost:5000"}),
        ({"decisions": ACCEPT_ALL}, {"Origin": "http://localhost"}),  # the service's own
        ({"decisions": refusal, "source": "gpc"}, {"Sec-GPC": "1"}),
        ({"decisions": ACCEPT_ALL}, {"Origin": "https://evil.example"}),  # 403
        ({"decisions": ACCEPT_ALL}, {"X-Consent-Token": foreign}),  # 403
        ({"decisions": ACCEPT_ALL}, {"X-Consent-Token": "forged"}),  # 401
        ({"decisions": [{"purpose": "nope", "granted": True}]}, {}),  # 422
        ({"decisions": ACCEPT_ALL, "config_hash": "0" * 64}, {}),  # never served: 422
        ({"decisions": ACCEPT_ALL, "source": "gpc"}, {}),  # 422
        ({"decisions": ACCEPT_ALL, "extra": 1}, {}),  # 422
        ({"decisions": ACCEPT_ALL}, {"Idempotency-Key": "short"}),  # 422
    ]
    for body, headers in cases:
        fast = client.post(f"/v1/sites/{demo_site}/records", json=body, headers=headers)
        flask = flask_records.post(f"/v1/sites/{demo_site}/records", json=body, headers=headers)
        assert _comparable_record(fast) == _comparable_record(flask), (body, headers)
    answered_fast = len(cases) - len(dispatched)
    assert answered_fast == 5  # the config_hash case: Flask, until this process saw it served


def test_a_replay_and_a_conflict_answer_alike_on_both_paths(
    app, client, flask_records, dispatched, demo_site
):
    key = {"Idempotency-Key": "a-key-long-enough-to-be-taken-0001"}
    first = submit(client, demo_site, ACCEPT_ALL, headers=key)
    for other in (client, flask_records):
        replay = submit(other, demo_site, ACCEPT_ALL, headers=key)
        assert replay.status_code == 201
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert replay.get_json() == first.get_json()
    dispatched.clear()
    fast = submit(client, demo_site, REJECT_ALL, headers=key)  # failed in its batch: the view
    flask = submit(flask_records, demo_site, REJECT_ALL, headers=key)
    assert _comparable_record(fast) == _comparable_record(flask)
    assert fast.status_code == 422
    assert dispatched == [1]
    with app.app_context():
        assert record_total() == 1


def record_total() -> int:
    return db.session.scalar(select(func.count()).select_from(ConsentRecord))


def test_records_beyond_the_limit_are_refused_whichever_path(app_with, demo_site):
    client = app_with(RATELIMIT_RECORD="2/minute").test_client()
    assert submit(client, "demo", ACCEPT_ALL).status_code == 201  # fast
    assert submit(client, "demo", ACCEPT_ALL, language="EN!").status_code == 422  # Flask
    refused = submit(client, "demo", ACCEPT_ALL)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1


@pytest.mark.parametrize(
    "body",
    [
        b"\xef\xbb\xbf" + json.dumps({"decisions": ACCEPT_ALL}).encode(),  # a UTF-8 BOM
        json.dumps({"decisions": ACCEPT_ALL}).encode("utf-16"),
    ],
    ids=["utf-8 BOM", "utf-16"],
)
def test_a_body_flask_cannot_read_is_refused_on_both_paths(client, flask_records, demo_site, body):
    answers = [
        other.post(f"/v1/sites/{demo_site}/records", data=body, content_type="application/json")
        for other in (client, flask_records)
    ]
    assert [answer.status_code for answer in answers] == [400, 400]
    assert _comparable_record(answers[0]) == _comparable_record(answers[1])


def test_a_failure_after_recording_is_answered_once_and_never_recorded_again(
    app, client, demo_site, monkeypatch
):
    """Whatever fails once the record was submitted, Flask answers it without recording."""
    assert submit(client, demo_site, ACCEPT_ALL).status_code == 201  # Flask: the site's copy
    fast_path = app.extensions["consent.fast_path"]
    answered = fast_path.security_headers

    def failing_once(environ):
        monkeypatch.setattr(fast_path, "security_headers", answered)
        raise RuntimeError("an answer that could not be built")

    monkeypatch.setattr(fast_path, "security_headers", failing_once)
    with pytest.raises(RuntimeError, match="could not be built"):  # TESTING: Flask re-raises
        submit(client, demo_site, ACCEPT_ALL)  # (in production: its 500 answer)
    with app.app_context():
        assert record_total() == 2


def test_a_failure_after_recording_is_counted_once(app_with, demo_site):
    """An idempotency conflict, failed in its batch, uses one request of the allowance."""
    client = app_with(RATELIMIT_RECORD="3/minute").test_client()
    key = {"Idempotency-Key": "a-key-long-enough-to-be-taken-0002"}
    assert submit(client, "demo", ACCEPT_ALL, headers=key).status_code == 201
    assert submit(client, "demo", REJECT_ALL, headers=key).status_code == 422
    assert submit(client, "demo", ACCEPT_ALL).status_code == 201
    assert submit(client, "demo", ACCEPT_ALL).status_code == 429
