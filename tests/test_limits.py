"""Abuse limits: 429 with Retry-After, keyed on the real client address, shared in Redis.

Each test builds its own app on the test database with low limits (the production
defaults are too high to reach quickly), and speaks to it from a client address of its
choosing, the way a proxy or the internet would present it.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from urllib.parse import urlsplit

import pytest
import redis
from helpers import ACCEPT_ALL, bearer, check, submit
from sqlalchemy import func, select
from tcp_proxy import CuttableProxy

from consent.config import ConfigError
from consent.db import db
from consent.limits import FallbackStorage
from consent.models import BannerImpression

REDIS_URL = os.environ.get("CONSENT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CLIENT = "192.0.2.10"
PROXY = "10.0.0.1"
CSRF_TOKEN = re.compile(
    r'name="csrf_token" type="hidden" value="([^"]+)"|'
    r'type="hidden" name="csrf_token" value="([^"]+)"'
)


@pytest.fixture
def redis_prefix():
    """A key prefix of its own in the test Redis; its keys are removed afterwards."""
    connection = redis.Redis.from_url(REDIS_URL)
    try:
        connection.ping()
    except redis.ConnectionError as error:
        if os.environ.get("CI"):
            pytest.fail(f"Redis is required in CI and not reachable: {error}")
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {error}")
    prefix = f"consent-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    keys = list(connection.scan_iter(match=f"*{prefix}*"))
    if keys:
        connection.delete(*keys)
    connection.close()


def client_at(app, address: str = CLIENT):
    """A test client whose requests come from ``address`` (the TCP peer)."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def forwarded_for(chain: str) -> dict[str, str]:
    return {"X-Forwarded-For": chain}


def assert_refused(response) -> None:
    """429, a Retry-After within the window, and an answer no cache keeps."""
    assert response.status_code == 429, response.text
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert response.headers["Cache-Control"] == "no-store"


# --- recording and checking -------------------------------------------------------------


def test_record_over_the_limit_gets_429_in_the_api_error_shape(app_with, demo_site):
    client = client_at(app_with(RATELIMIT_RECORD="2/minute"))
    assert [submit(client, demo_site, ACCEPT_ALL).status_code for _ in range(2)] == [201, 201]
    response = submit(client, demo_site, ACCEPT_ALL)
    assert_refused(response)
    body = response.get_json()
    assert body["error"] == "too_many_requests"
    assert "Try again in" in body["message"]
    assert "allowed" not in body


def test_refused_record_writes_nothing(app_with, demo_site, record_count):
    client = client_at(app_with(RATELIMIT_RECORD="1/minute"))
    assert submit(client, demo_site, ACCEPT_ALL).status_code == 201
    before = record_count()
    assert submit(client, demo_site, ACCEPT_ALL).status_code == 429
    assert record_count() == before == 1


def test_check_over_the_limit_still_answers_not_allowed(app_with, demo_site):
    client = client_at(app_with(RATELIMIT_CHECK="2/minute"))
    for _ in range(2):
        assert check(client, demo_site, "analytics").status_code == 200
    response = check(client, demo_site, "analytics")
    assert_refused(response)
    body = response.get_json()
    assert body["allowed"] is False and body["reason"] == "rate_limited"
    assert body["error"] == "too_many_requests"


def test_check_answers_stay_uncached_under_the_limit(app_with, demo_site):
    client = client_at(app_with(RATELIMIT_CHECK="2/minute"))
    response = check(client, demo_site, "analytics")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert "Retry-After" not in response.headers


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "/v1/server/check?purpose=analytics&user_id=user-1", None),
        ("post", "/v1/server/bulk-check", {"purpose": "analytics", "user_ids": ["user-1"]}),
    ],
    ids=["check", "bulk-check"],
)
def test_server_checks_are_limited(app_with, demo_site, make_key, method, path, body):
    client = client_at(app_with(RATELIMIT_CHECK="1/minute"))
    headers = bearer(make_key(demo_site, "read"))
    assert getattr(client, method)(path, json=body, headers=headers).status_code == 200
    response = getattr(client, method)(path, json=body, headers=headers)
    assert_refused(response)
    assert response.get_json()["error"] == "too_many_requests"


def test_banner_shows_over_the_limit_get_429_and_are_not_counted(app, app_with, demo_site):
    client = client_at(app_with(RATELIMIT_RECORD="2/minute"))
    shown = [client.post(f"/v1/sites/{demo_site}/shown").status_code for _ in range(3)]
    assert shown == [204, 204, 429]
    assert_refused(client.post(f"/v1/sites/{demo_site}/shown"))
    with app.app_context():
        assert db.session.scalar(select(func.sum(BannerImpression.count))) == 2
    assert submit(client, demo_site, ACCEPT_ALL).status_code == 201  # a count of its own


def test_each_site_counts_apart(app_with, demo_site, make_site):
    client = client_at(app_with(RATELIMIT_RECORD="1/minute"))
    other_site = make_site()
    assert submit(client, demo_site, ACCEPT_ALL).status_code == 201
    assert submit(client, demo_site, ACCEPT_ALL).status_code == 429
    assert submit(client, other_site, ACCEPT_ALL).status_code == 201


def test_refusal_is_readable_by_the_sites_own_pages(app_with, make_site):
    site = make_site(origins=["https://shop.example"])
    client = client_at(app_with(RATELIMIT_RECORD="1/minute"))
    origin = {"Origin": "https://shop.example"}
    assert submit(client, site, ACCEPT_ALL, headers=origin).status_code == 201
    response = submit(client, site, ACCEPT_ALL, headers=origin)
    assert response.status_code == 429
    assert response.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "Retry-After" in response.headers["Access-Control-Expose-Headers"]


def test_a_mistyped_limit_stops_the_app_from_starting(app_with):
    with pytest.raises(ConfigError, match="CONSENT_RATELIMIT_CHECK"):
        app_with(RATELIMIT_CHECK="600 a minute")


def test_limits_can_be_switched_off(app_with, demo_site):
    client = client_at(app_with(RATELIMIT_ENABLED=False, RATELIMIT_RECORD="1/minute"))
    assert [submit(client, demo_site, ACCEPT_ALL).status_code for _ in range(3)] == [201] * 3


# --- admin sign-in ----------------------------------------------------------------------


def test_sign_in_over_the_limit_gets_a_readable_page(app_with):
    client = client_at(app_with(RATELIMIT_SIGN_IN="2/minute"))
    form = client.get("/admin/sign-in")
    match = CSRF_TOKEN.search(form.text)
    attempt = {"csrf_token": match.group(1) or match.group(2), "name": "ada", "password": "guess"}
    for _ in range(2):
        assert "Wrong name or password." in client.post("/admin/sign-in", data=attempt).text
    response = client.post("/admin/sign-in", data=attempt)
    assert_refused(response)
    assert response.mimetype == "text/html"
    assert "Too Many Requests" in response.text and "Try again in" in response.text


def test_showing_the_sign_in_form_is_not_counted(app_with):
    client = client_at(app_with(RATELIMIT_SIGN_IN="1/minute"))
    assert [client.get("/admin/sign-in").status_code for _ in range(3)] == [200] * 3


# --- the client address -----------------------------------------------------------------


def test_forwarded_for_is_ignored_without_trusted_proxies(app_with, demo_site):
    client = client_at(app_with(RATELIMIT_RECORD="1/minute", TRUSTED_PROXIES=0))
    first = submit(client, demo_site, ACCEPT_ALL, headers=forwarded_for("198.51.100.1"))
    assert first.status_code == 201
    second = submit(client, demo_site, ACCEPT_ALL, headers=forwarded_for("198.51.100.2"))
    assert second.status_code == 429


def test_behind_a_trusted_proxy_each_real_client_counts_apart(app_with, demo_site):
    proxy = client_at(app_with(RATELIMIT_RECORD="1/minute", TRUSTED_PROXIES=1), PROXY)
    alice, bob = forwarded_for("203.0.113.1"), forwarded_for("203.0.113.2")
    assert submit(proxy, demo_site, ACCEPT_ALL, headers=alice).status_code == 201
    assert submit(proxy, demo_site, ACCEPT_ALL, headers=alice).status_code == 429
    assert submit(proxy, demo_site, ACCEPT_ALL, headers=bob).status_code == 201


def test_spoofed_leftmost_forwarded_for_does_not_dodge_the_limit(app_with, demo_site):
    proxy = client_at(app_with(RATELIMIT_RECORD="1/minute", TRUSTED_PROXIES=1), PROXY)
    real = "203.0.113.1"
    assert submit(proxy, demo_site, ACCEPT_ALL, headers=forwarded_for(real)).status_code == 201
    # The client wrote the first entry itself; the proxy appended the address it saw.
    spoofed = forwarded_for(f"198.51.100.7, {real}")
    assert submit(proxy, demo_site, ACCEPT_ALL, headers=spoofed).status_code == 429


# --- where the counts live --------------------------------------------------------------


def test_limit_holds_across_apps_sharing_redis(app_with, demo_site, redis_prefix):
    settings = {
        "RATELIMIT_STORAGE_URL": REDIS_URL,
        "RATELIMIT_KEY_PREFIX": redis_prefix,
        "RATELIMIT_RECORD": "2/minute",
    }
    first, second = client_at(app_with(**settings)), client_at(app_with(**settings))
    assert submit(first, demo_site, ACCEPT_ALL).status_code == 201
    assert submit(second, demo_site, ACCEPT_ALL).status_code == 201
    assert_refused(submit(first, demo_site, ACCEPT_ALL))
    assert_refused(submit(second, demo_site, ACCEPT_ALL))


def test_memory_counts_are_per_app(app_with, demo_site):
    first = client_at(app_with(RATELIMIT_RECORD="1/minute"))
    second = client_at(app_with(RATELIMIT_RECORD="1/minute"))
    assert submit(first, demo_site, ACCEPT_ALL).status_code == 201
    assert submit(second, demo_site, ACCEPT_ALL).status_code == 201


def test_unreachable_storage_falls_back_to_counting_in_memory(app_with, demo_site):
    nothing_listens = "redis://127.0.0.1:1/0"
    app = app_with(RATELIMIT_STORAGE_URL=nothing_listens, RATELIMIT_CHECK="1/minute")
    client = client_at(app)
    assert check(client, demo_site, "analytics").status_code == 200
    assert check(client, demo_site, "analytics").status_code == 429


def test_counts_go_back_to_redis_once_it_answers_again(
    app_with, demo_site, redis_prefix, monkeypatch
):
    monkeypatch.setattr(FallbackStorage, "RETRY_SECONDS", 0.0)
    proxy = CuttableProxy("127.0.0.1", urlsplit(REDIS_URL).port or 6379)
    try:
        settings = {
            "RATELIMIT_STORAGE_URL": f"redis://127.0.0.1:{proxy.port}/0",
            "RATELIMIT_KEY_PREFIX": redis_prefix,
            "RATELIMIT_RECORD": "2/minute",
        }
        first, second = client_at(app_with(**settings)), client_at(app_with(**settings))
        proxy.cut()
        assert submit(first, demo_site, ACCEPT_ALL).status_code == 201  # in first's memory
        proxy.restore()
        assert submit(first, demo_site, ACCEPT_ALL).status_code == 201  # in Redis again
        assert submit(second, demo_site, ACCEPT_ALL).status_code == 201
        assert_refused(submit(second, demo_site, ACCEPT_ALL))
    finally:
        proxy.close()


@pytest.mark.parametrize(
    "storage_url",
    ["memory://", "redis://127.0.0.1:1/0"],
    ids=["memory", "redis down"],
)
def test_counting_in_memory_starts_no_thread_per_request(
    app_with, demo_site, monkeypatch, storage_url
):
    # The library's own memory storage starts a timer thread on nearly every hit, which
    # cost the check most of its throughput under gunicorn (bench/check_throughput.py);
    # Flask-Limiter's fallback for a Redis that is down is that same storage.
    app = app_with(RATELIMIT_STORAGE_URL=storage_url, RATELIMIT_CHECK="1000/minute")
    client = client_at(app)
    check(client, demo_site, "analytics")
    started = []
    monkeypatch.setattr(threading.Thread, "start", lambda thread: started.append(thread))
    for path in ["analytics", "Analytics"] * 10:  # the fast path and Flask
        assert check(client, demo_site, path).status_code == 200
    assert started == []
