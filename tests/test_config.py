"""Configuration: safe defaults, environment overrides, a clear refusal in production."""

from __future__ import annotations

import pytest

from consent import create_app


def test_production_without_secret_key_refuses_to_start(monkeypatch, tmp_path):
    monkeypatch.setenv("CONSENT_ENV", "production")
    monkeypatch.delenv("CONSENT_SECRET_KEY", raising=False)
    with pytest.raises(RuntimeError, match="CONSENT_SECRET_KEY is not set"):
        create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/x.sqlite"})


def test_development_keeps_a_generated_secret_in_the_instance_folder(tmp_path):
    config = {"DATABASE_URL": f"sqlite:///{tmp_path}/x.sqlite"}
    app = create_app(config)
    again = create_app(config)
    assert app.config["SECRET_KEY"] and app.config["SECRET_KEY"] == again.config["SECRET_KEY"]


def test_default_database_is_sqlite_in_the_instance_folder(monkeypatch):
    monkeypatch.delenv("CONSENT_DATABASE_URL", raising=False)
    app = create_app({"SECRET_KEY": "x", "DATA_KEY": "a" * 44})
    assert app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///")
    assert app.config["SQLALCHEMY_DATABASE_URI"].endswith("instance/consent.sqlite")


def test_postgresql_url_uses_psycopg(monkeypatch):
    monkeypatch.setenv("CONSENT_DATABASE_URL", "postgresql://user@db.example/consent")
    app = create_app({"SECRET_KEY": "x", "DATA_KEY": "a" * 44})
    assert app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql+psycopg://")


def test_api_is_never_redirected_to_https(tmp_path):
    app = create_app(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path}/x.sqlite",
            "FORCE_HTTPS": True,
            "SECRET_KEY": "x",
            "DATA_KEY": "a" * 44,
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
            "DATA_KEY": "a" * 44,
            "SQLALCHEMY_ENGINE_OPTIONS": {"connect_args": {"connect_timeout": 2}},
        }
    )
    response = app.test_client().get("/v1/sites/demo/check?purpose=analytics")
    assert response.status_code == 503
    body = response.get_json()
    assert (body["allowed"], body["reason"]) == (False, "unavailable")
    assert response.headers["Retry-After"]
