"""Configuration: safe defaults, environment overrides, a clear refusal in production."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from helpers import ACCEPT_ALL, submit
from sqlalchemy import create_engine, event
from sqlalchemy.orm import Session

from consent import create_app, metrics
from consent.config import ConfigError
from consent.db import db

#: (Not imported from conftest: tests/browser has a conftest module of that name too.)
TEST_SECRETS = {"DATA_KEY": base64.b64encode(b"k" * 32).decode()}
ROOT = Path(__file__).resolve().parent.parent
CONSENT_COMMAND = str(Path(sys.executable).with_name("consent"))
GUNICORN_COMMAND = str(Path(sys.executable).with_name("gunicorn"))


def test_production_without_secret_key_refuses_to_start(monkeypatch, tmp_path):
    monkeypatch.setenv("CONSENT_ENV", "production")
    monkeypatch.delenv("CONSENT_SECRET_KEY", raising=False)
    with pytest.raises(ConfigError, match="CONSENT_SECRET_KEY is not set"):
        create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/x.sqlite"})


def test_development_keeps_a_generated_secret_in_the_instance_folder(tmp_path):
    config = {"DATABASE_URL": f"sqlite:///{tmp_path}/x.sqlite"}
    app = create_app(config)
    again = create_app(config)
    assert app.config["SECRET_KEY"] and app.config["SECRET_KEY"] == again.config["SECRET_KEY"]


def test_default_database_is_sqlite_in_the_instance_folder(monkeypatch):
    monkeypatch.delenv("CONSENT_DATABASE_URL", raising=False)
    app = create_app({"SECRET_KEY": "x", "DATA_KEY": TEST_SECRETS["DATA_KEY"]})
    assert app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///")
    assert app.config["SQLALCHEMY_DATABASE_URI"].endswith("instance/consent.sqlite")


def test_postgresql_url_uses_psycopg(monkeypatch):
    monkeypatch.setenv("CONSENT_DATABASE_URL", "postgresql://user@db.example/consent")
    app = create_app({"SECRET_KEY": "x", "DATA_KEY": TEST_SECRETS["DATA_KEY"]})
    assert app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql+psycopg://")


def test_api_is_never_redirected_to_https(tmp_path):
    app = create_app(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path}/x.sqlite",
            "FORCE_HTTPS": True,
            "SECRET_KEY": "x",
            "DATA_KEY": TEST_SECRETS["DATA_KEY"],
        }
    )
    client = app.test_client()
    # Pages are redirected to HTTPS...
    assert client.get("/static/widget/consent.js").status_code == 302
    # ...the API never is: a POST that gets a 302 is lost.
    for response in (
        client.get("/.well-known/gpc.json"),
        client.post("/v1/sites/demo/records", json={}),
        client.get("/v1/openapi.json"),
    ):
        assert response.status_code != 302


def test_check_fails_closed_when_the_database_is_unreachable(tmp_path):
    app = create_app(
        {
            "DATABASE_URL": "postgresql://postgres@127.0.0.1:9/unreachable",
            "SECRET_KEY": "x",
            "DATA_KEY": TEST_SECRETS["DATA_KEY"],
            "SQLALCHEMY_ENGINE_OPTIONS": {"connect_args": {"connect_timeout": 2}},
        }
    )
    response = app.test_client().get("/v1/sites/demo/check?purpose=analytics")
    assert response.status_code == 503
    body = response.get_json()
    assert (body["allowed"], body["reason"]) == (False, "unavailable")
    assert response.headers["Retry-After"]


#: A bad environment, and the variable its one-line refusal must name.
BAD_ENVIRONMENTS = [
    ({"CONSENT_ENV": "production"}, "CONSENT_SECRET_KEY"),
    ({"CONSENT_ENV": "production", "CONSENT_SECRET_KEY": "s"}, "CONSENT_DATA_KEY"),
    (
        {
            "CONSENT_ENV": "production",
            "CONSENT_SECRET_KEY": "s",
            "CONSENT_DATA_KEY": TEST_SECRETS["DATA_KEY"],
        },
        "CONSENT_PUBLIC_URL",
    ),
    ({"CONSENT_DATABASE_URL": "mysql://app@db/consent"}, "CONSENT_DATABASE_URL"),
    ({"CONSENT_DATABASE_URL": "not a url"}, "CONSENT_DATABASE_URL"),
    ({"CONSENT_TRUSTED_PROXIES": "one"}, "CONSENT_TRUSTED_PROXIES"),
    ({"CONSENT_FAST_CHECK": "maybe"}, "CONSENT_FAST_CHECK"),
    ({"CONSENT_RATELIMIT_RECORD": "lots"}, "CONSENT_RATELIMIT_RECORD"),
    ({"CONSENT_PUBLIC_URL": "javascript:alert(1)"}, "CONSENT_PUBLIC_URL"),
    ({"CONSENT_PUBLIC_URL": "consent.example.com"}, "CONSENT_PUBLIC_URL"),
    ({"CONSENT_OLD_DATA_KEYS": '["short"]'}, "CONSENT_DATA_KEY"),
    ({"CONSENT_LOG_FORMAT": "xml"}, "CONSENT_LOG_FORMAT"),
]


def _environment_without_consent_settings(tmp_path) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    environment["CONSENT_DATABASE_URL"] = f"sqlite:///{tmp_path}/x.sqlite"
    return environment


@pytest.mark.parametrize(("settings", "variable"), BAD_ENVIRONMENTS)
def test_a_bad_setting_stops_the_command_line_with_one_line(tmp_path, settings, variable):
    environment = {**_environment_without_consent_settings(tmp_path), **settings}
    result = subprocess.run(
        [CONSENT_COMMAND, "verify"],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert variable in line


@pytest.mark.parametrize(("settings", "variable"), BAD_ENVIRONMENTS[:4])
def test_a_bad_setting_stops_gunicorn_with_one_line(tmp_path, settings, variable):
    environment = {**_environment_without_consent_settings(tmp_path), **settings}
    environment["CONSENT_BIND"] = "127.0.0.1:0"
    result = subprocess.run(
        [GUNICORN_COMMAND, "-c", str(ROOT / "gunicorn.conf.py"), "consent:create_app()"],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if variable in line]
    assert len(result.stderr.strip().splitlines()) == 1


def test_production_with_every_setting_starts(monkeypatch, tmp_path):
    for name, value in {
        "ENV": "production",
        "SECRET_KEY": "s" * 40,
        "DATA_KEY": TEST_SECRETS["DATA_KEY"],
        "PUBLIC_URL": "https://consent.example.com/",
    }.items():
        monkeypatch.setenv(f"CONSENT_{name}", value)
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/x.sqlite"})
    assert app.config["PUBLIC_URL"] == "https://consent.example.com"


def test_unmigrated_database_says_to_run_init_db(database_url, tmp_path):
    empty = f"sqlite:///{tmp_path}/empty.sqlite"
    if database_url.startswith("postgresql"):
        with psycopg.connect(database_url, autocommit=True) as connection:
            connection.execute("DROP SCHEMA public CASCADE")
            connection.execute("CREATE SCHEMA public")
        empty = database_url
    app = create_app({"DATABASE_URL": empty, **TEST_SECRETS})
    response = app.test_client().get("/v1/sites/demo/config")
    assert response.status_code == 503
    assert "consent init-db" in response.get_json()["message"]
    with app.app_context():
        db.engine.dispose()


def test_unmigrated_database_is_named_on_the_command_line(tmp_path):
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/empty.sqlite", **TEST_SECRETS})
    with app.app_context():
        result = app.test_cli_runner().invoke(args=["verify"])
    assert result.exit_code == 1
    assert "run `consent init-db`" in result.output


@pytest.mark.parametrize(("engine_of", "foreign_keys"), [("app", 1), ("another library", 0)])
def test_sqlite_settings_go_to_the_apps_engines_only(tmp_path, engine_of, foreign_keys):
    """The service configures its own engines: another engine in the process keeps its own."""
    url = f"sqlite:///{tmp_path}/x.sqlite"
    app = create_app({"DATABASE_URL": url, **TEST_SECRETS})
    with app.app_context():
        engine = db.engine if engine_of == "app" else create_engine(url)
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == foreign_keys
        engine.dispose()


def test_record_metrics_listen_to_the_apps_sessions_only(app, client, demo_site):
    """A session another library makes in the process carries none of the service's hooks."""
    assert submit(client, demo_site, ACCEPT_ALL).status_code == 201
    for name, hook in [
        ("after_commit", metrics._count_committed_records),
        ("after_soft_rollback", metrics._forget_rolled_back_records),
    ]:
        assert event.contains(db.session, name, hook)
        assert not event.contains(Session, name, hook)
