"""Running it: health, readiness, metrics, request ids, and logs that keep secrets out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from app_process import app_environment, post_json
from helpers import ACCEPT_ALL, bearer, check, submit
from prometheus_client.parser import text_string_to_metric_families
from serving import free_port, gunicorn, wait_until_healthy

from consent import create_app
from consent.db import db

METRICS_TOKEN = "metrics-token-for-tests"
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def metered(app_with):
    """The app with /metrics open to METRICS_TOKEN."""
    return app_with(METRICS_TOKEN=METRICS_TOKEN, RATELIMIT_ENABLED=False)


def scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", headers=bearer(METRICS_TOKEN))
    assert response.status_code == 200
    return samples(response.get_data(as_text=True))


def samples(page: str) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
    }


def test_healthz_answers_without_a_database():
    app = create_app(
        {
            "DATABASE_URL": "postgresql://postgres@127.0.0.1:9/unreachable",
            "SECRET_KEY": "x",
            "DATA_KEY": "a" * 43 + "=",
        }
    )
    response = app.test_client().get("/healthz")
    assert (response.status_code, response.get_json()) == (200, {"status": "ok"})


def test_readyz_is_ready_on_a_migrated_database(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["checks"] == {"database": "ok", "schema": "ok"}


def test_readyz_is_not_ready_without_the_database():
    app = create_app(
        {
            "DATABASE_URL": "postgresql://postgres@127.0.0.1:9/unreachable",
            "SECRET_KEY": "x",
            "DATA_KEY": "a" * 43 + "=",
            "SQLALCHEMY_ENGINE_OPTIONS": {"connect_args": {"connect_timeout": 2}},
        }
    )
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["database"] == "unavailable"


def test_readyz_names_a_schema_that_is_not_migrated(tmp_path):
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/empty.sqlite", "SECRET_KEY": "x"})
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert "consent init-db" in response.get_json()["reason"]


def test_readyz_names_a_schema_one_migration_behind(app, client):
    with app.app_context():
        db.session.execute(db.text("UPDATE alembic_version SET version_num = '0003'"))
        db.session.commit()
    body = client.get("/readyz").get_json()
    assert body["checks"]["schema"].startswith("at 0003")


@pytest.mark.parametrize(
    ("storage", "status", "redis_check"),
    [(REDIS_URL, 200, "ok"), ("redis://127.0.0.1:9/0", 503, "unavailable")],
)
def test_readyz_checks_redis_when_configured(app_with, storage, status, redis_check):
    response = app_with(RATELIMIT_STORAGE_URL=storage).test_client().get("/readyz")
    assert response.status_code == status
    assert response.get_json()["checks"]["redis"] == redis_check


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {METRICS_TOKEN}"])
def test_metrics_are_not_public(metered, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    assert metered.test_client().get("/metrics", headers=headers).status_code == 404


def test_metrics_are_off_without_a_token(client):
    assert client.get("/metrics", headers=bearer("")).status_code == 404


def test_metrics_count_fast_path_checks_by_route_and_reason(metered, demo_site):
    client = metered.test_client()
    before = scrape(client)
    check(client, demo_site, "analytics")
    after = scrape(client)
    route = (
        "consent_http_requests_total",
        (("method", "GET"), ("route", "public.Check"), ("status", "200")),
    )
    reason = ("consent_checks_total", (("reason", "no_decision"),))
    assert after[route] - before.get(route, 0) == 1
    assert after[reason] - before.get(reason, 0) == 1
    timed = ("consent_http_request_duration_seconds_count", (("route", "public.Check"),))
    assert after[timed] - before.get(timed, 0) == 1


def test_metrics_count_records_once_committed(metered, demo_site):
    client = metered.test_client()
    key = ("consent_records_appended_total", (("event", "decision"),))
    before = scrape(client).get(key, 0)
    submit(client, demo_site, ACCEPT_ALL)
    submit(client, demo_site, [{"purpose": "nope", "granted": True}])  # 422: nothing kept
    assert scrape(client)[key] - before == 1


def test_metrics_count_refused_origins(metered, demo_site):
    client = metered.test_client()
    key = ("consent_refused_origins_total", ())
    before = scrape(client)[key]
    response = submit(client, demo_site, ACCEPT_ALL, headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    assert scrape(client)[key] - before == 1


def test_metrics_count_rate_limit_refusals(app_with, demo_site):
    limited = app_with(METRICS_TOKEN=METRICS_TOKEN, RATELIMIT_CHECK="1/minute")
    client = limited.test_client()
    key = ("consent_rate_limited_total", (("route", "public.Check"),))
    before = scrape(client).get(key, 0)
    check(client, demo_site, "analytics")
    assert check(client, demo_site, "analytics").status_code == 429
    assert scrape(client)[key] - before == 1


def test_metrics_show_the_last_chain_verification(metered, demo_site):
    client = metered.test_client()
    submit(client, demo_site, ACCEPT_ALL)
    with metered.app_context():
        result = metered.test_cli_runner().invoke(args=["verify", demo_site])
    assert result.exit_code == 0, result.output
    assert scrape(client)[("consent_chain_intact", (("site", demo_site),))] == 1


@pytest.mark.parametrize("given", ["req-42.a:b", None])
def test_request_id_is_echoed_or_made(client, demo_site, given):
    headers = {"X-Request-Id": given} if given else {}
    response = client.get(f"/v1/sites/{demo_site}/check?purpose=analytics", headers=headers)
    assert response.headers["X-Request-Id"] == (given or response.headers["X-Request-Id"])
    assert len(response.headers["X-Request-Id"]) >= 8


def test_a_request_id_that_is_not_plain_is_replaced(client):
    response = client.get("/healthz", headers={"X-Request-Id": "a b\x7f<script>"})
    assert response.headers["X-Request-Id"] != "a b\x7f<script>"
    assert response.headers["X-Request-Id"].isalnum()


def _get(url: str, headers: dict[str, str] | None = None) -> str:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read().decode()
    except urllib.error.HTTPError as error:
        return error.read().decode()


def test_gunicorn_logs_json_lines_without_secrets(app, demo_site, make_key, tmp_path):
    secret = make_key(demo_site, "read", "write")
    env = {
        **app_environment(app.config["SQLALCHEMY_DATABASE_URI"], app.config),
        "CONSENT_ACCESS_LOG": "-",
        "CONSENT_METRICS_TOKEN": METRICS_TOKEN,
    }
    with gunicorn(env, tmp_path) as server:
        status, body = post_json(
            f"{server.base_url}/v1/server/unsubscribe-links",
            {"purpose": "email_marketing", "emails": ["reader@example.com"]},
            bearer(secret),
        )
        assert status == 201, body
        token_path = body["links"][0]["url"].split("/", 3)[3]
        _get(f"{server.base_url}/{token_path}", {"X-Request-Id": "trace-7"})
        _get(
            f"{server.base_url}/v1/server/check?purpose=email_marketing&email=reader%40example.com",
            bearer(secret),
        )
        page = _get(f"{server.base_url}/metrics", bearer(METRICS_TOKEN))
    lines = [json.loads(line) for line in server.stdout.read_text().splitlines()]
    written = server.stdout.read_text() + server.stderr.read_text()
    token = token_path.rsplit("/", 1)[1]
    for secret_text in (token, "reader@example.com", "reader%40example.com", secret):
        assert secret_text not in written
    assert any("trace-7" == line["request_id"] for line in lines)
    assert any("/unsubscribe/[redacted]" in line["message"] for line in lines)
    # Both workers' counts add up on one page (multiprocess mode).
    counted = samples(page)
    key = (
        "consent_http_requests_total",
        (("method", "GET"), ("route", "unsubscribe.confirm"), ("status", "200")),
    )
    assert counted[key] == 1


def test_the_development_server_does_not_log_unsubscribe_tokens(tmp_path):
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")},
        "CONSENT_DATABASE_URL": f"sqlite:///{tmp_path}/consent.sqlite",
    }
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("consent")), "run", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    token = "eyJzaXRlIjoiZGVtbyJ9.aBcDeF.c2lnbmF0dXJlLWZvci10ZXN0cw"
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}")
        _get(f"http://127.0.0.1:{port}/unsubscribe/{token}")
    finally:
        server.terminate()
        _, written = server.communicate(timeout=30)
    assert "GET /unsubscribe/[redacted]" in written
    assert token not in written
