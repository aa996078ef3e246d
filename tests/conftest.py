"""Test fixtures: the app from its factory, on SQLite and on PostgreSQL.

Every database test runs twice, once per database. Each test gets a fresh database
copied from a template that the real migrations built once per session, so the
schema under test, triggers included, is exactly what ``consent init-db`` makes.
"""

from __future__ import annotations

import base64
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from flask_migrate import upgrade
from helpers import smtp_server
from sqlalchemy import func, select

from consent import create_app
from consent.db import db
from consent.demo import seed_demo_site
from consent.keys import issue_key
from consent.models import ConsentRecord
from consent.sites import (
    STANDARD_PURPOSES,
    create_site,
    get_site_by_key,
    publish_policy,
    set_purpose,
)

POSTGRES_ADMIN_URL = os.environ.get(
    "CONSENT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TEST_SECRETS = {
    "SECRET_KEY": "test-secret-key-not-for-production",
    "DATA_KEY": base64.b64encode(b"k" * 32).decode(),
}
#: The limiter stays on, but out of reach of tests that record or check many times from
#: one address (threads, fuzzing); tests/test_limits.py sets low limits of its own.
TEST_LIMITS = {"RATELIMIT_RECORD": "100000/minute", "RATELIMIT_CHECK": "100000/minute"}


def _postgres_url(database: str) -> str:
    base, _, _ = POSTGRES_ADMIN_URL.rpartition("/")
    return f"{base}/{database}"


def _postgres_admin(statement: str) -> None:
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(statement)


def _migrate(database_url: str) -> None:
    app = create_app({"TESTING": True, "DATABASE_URL": database_url, **TEST_SECRETS})
    with app.app_context():
        upgrade()
        db.engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.sqlite"
    _migrate(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_template() -> str:
    try:
        _postgres_admin("SELECT 1")
    except psycopg.OperationalError as error:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI and not reachable: {error}")
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {error}")
    name = f"consent_template_{os.getpid()}"
    _postgres_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    _postgres_admin(f"CREATE DATABASE {name}")
    _migrate(_postgres_url(name))
    yield name
    _postgres_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def drop_later():
    """Drop a test's database in the background; every drop is checked at the end."""
    drops = []
    with ThreadPoolExecutor(1, thread_name_prefix="drop-test-databases") as pool:
        yield lambda name: drops.append(
            pool.submit(_postgres_admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        )
    for drop in drops:
        drop.result()  # a failed drop fails the session here


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """A freshly migrated, empty database of each kind."""
    if request.param == "sqlite":
        path = tmp_path / "consent.sqlite"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    template = request.getfixturevalue("postgres_template")
    drop_later = request.getfixturevalue("drop_later")
    name = f"consent_test_{uuid.uuid4().hex[:12]}"
    _postgres_admin(f"CREATE DATABASE {name} TEMPLATE {template}")
    yield _postgres_url(name)
    # Dropped while the next test runs (a drop costs about as much as a small test).
    drop_later(name)


@pytest.fixture
def app(database_url, tmp_path):
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": database_url,
            **TEST_SECRETS,
            **TEST_LIMITS,
        }
    )
    app.instance_path = str(tmp_path / "instance")
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def app_with(app):
    """Build another app on the test database with these settings (limits on)."""
    built = []

    def build(**settings):
        other = create_app(
            {
                "TESTING": True,
                "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
                "SECRET_KEY": app.config["SECRET_KEY"],
                "DATA_KEY": app.config["DATA_KEY"],
                **settings,
            }
        )
        built.append(other)
        return other

    yield build
    for other in built:
        with other.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def dialect(database_url) -> str:
    return "postgresql" if database_url.startswith("postgresql") else "sqlite"


@pytest.fixture
def demo_site(app) -> str:
    """The seeded demo site; returns its key."""
    with app.app_context():
        site = seed_demo_site()
        db.session.commit()
        return site.key


@pytest.fixture
def make_site(app) -> Callable[..., str]:
    """Create a site with the four standard cookie purposes; returns its key."""

    def make(key: str | None = None, *, origins=(), policy: str | None = "v1", **settings):
        with app.app_context():
            site = create_site(
                key or f"site-{uuid.uuid4().hex[:8]}",
                "Test site",
                origins=list(origins),
                **settings,
            )
            for position, purpose in enumerate(STANDARD_PURPOSES):
                set_purpose(
                    site,
                    purpose["key"],
                    position=position,
                    **{k: v for k, v in purpose.items() if k != "key"},
                )
            if policy:
                publish_policy(site, policy, is_material=True)
            db.session.commit()
            return site.key

    return make


@pytest.fixture
def make_key(app) -> Callable[..., str]:
    """Issue an API key for a site; returns the full secret."""

    def make(site_key: str, *scopes: str) -> str:
        with app.app_context():
            _, secret = issue_key(get_site_by_key(site_key), "test", list(scopes or ["read"]))
            db.session.commit()
            return secret

    return make


@pytest.fixture
def record_count(app) -> Callable[[], int]:
    """How many records the history holds, read from the database itself."""

    def count() -> int:
        with app.app_context():
            return db.session.scalar(select(func.count()).select_from(ConsentRecord))

    return count


#: What the hardening tests tried (fuzz examples, bad inputs, routes walked), by name.
TALLY = pytest.StashKey[Counter]()


@pytest.fixture
def tally(request) -> Counter:
    """Count what a test tried; the totals are printed at the end of the run."""
    return request.config.stash.setdefault(TALLY, Counter())


def pytest_terminal_summary(terminalreporter, config):
    counts = config.stash.get(TALLY, None)
    if counts:
        terminalreporter.section("what the hardening tests tried")
        for name, count in sorted(counts.items()):
            terminalreporter.write_line(f"{name}: {count}")


@pytest.fixture
def mailbox(app):
    """A local SMTP server (aiosmtpd) on a free port; the app sends its emails there."""
    with smtp_server() as (box, url):
        app.config["SMTP_URL"] = url
        app.config["PUBLIC_URL"] = "https://consent.example"
        yield box
