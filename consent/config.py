"""Configuration: defaults here, environment overrides, a dict for tests.

Every setting can be given as an environment variable prefixed with ``CONSENT_``
(``CONSENT_DATABASE_URL``, ``CONSENT_SECRET_KEY``, ...). Values are parsed as JSON when
they can be, so ``CONSENT_TRUSTED_PROXIES=1`` is the number 1.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from pathlib import Path
from urllib.parse import urlsplit

import click
from flask import Flask

#: Database URL schemes the service runs on (the drivers it ships with).
SUPPORTED_DATABASES = ("sqlite", "postgresql", "postgres", "postgresql+psycopg")
#: An HTTP header's name (RFC 9110 token), or empty.
HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]*\Z")


class ConfigError(click.ClickException):
    """A setting is missing or wrong: one line naming the variable and the fix.

    A ClickException, so the command line prints the line alone, with no traceback.
    """


class Config:
    #: "development" or "production". Production refuses to start without secrets.
    ENV = "development"
    #: SQLAlchemy URL; empty means SQLite in the instance folder.
    DATABASE_URL = ""
    #: Where people and other systems reach the service (scheme://host[:port][/prefix]):
    #: the base of every link it mints, never the request's Host header. Required in
    #: production; in development the address ``make run`` serves on.
    PUBLIC_URL = ""
    #: Signs visitor tokens, unsubscribe links and sessions. Required in production.
    SECRET_KEY = None
    #: Base64 of 32 random bytes: encrypts and hashes emails and user ids at rest.
    DATA_KEY = None
    #: Data keys replaced by rotation, still able to decrypt and look up (JSON list).
    OLD_DATA_KEYS: list[str] = []
    #: Largest request body accepted (bytes); larger gets 413.
    MAX_CONTENT_LENGTH = 64 * 1024
    #: Body limit for the bulk check and unsubscribe-link routes (10,000 addresses).
    LIST_MAX_CONTENT_LENGTH = 4 * 1024 * 1024
    #: Redirect pages (not the API, widget or unsubscribe) to HTTPS; default: production.
    FORCE_HTTPS = None
    #: How many reverse proxies in front of the app set X-Forwarded-For.
    TRUSTED_PROXIES = 0
    #: Public cache lifetime of the banner configuration, seconds.
    CONFIG_MAX_AGE = 300
    #: How many records the visitor's own history endpoint returns at most.
    HISTORY_LIMIT = 200
    #: Refuse too many requests from one client address (429); see consent/limits.py.
    RATELIMIT_ENABLED = True
    #: Where the counts live: memory:// (per worker process) or redis://host:6379/0.
    RATELIMIT_STORAGE_URL = "memory://"
    #: Prefix of every count's key in the storage, so services can share one Redis.
    RATELIMIT_KEY_PREFIX = "consent"
    # The limits: "N/second", "N/minute", "N/hour", "N/day", or several: "5/second;60/minute".
    #: Recording a decision, per client address and site.
    RATELIMIT_RECORD = "60/minute"
    #: Each check route (public per site, server, bulk), per client address.
    RATELIMIT_CHECK = "600/minute"
    #: Admin sign-in attempts per client address, on top of the per-name lockout.
    RATELIMIT_SIGN_IN = "10/minute"
    #: An admin session unused this long ends (minutes).
    ADMIN_IDLE_MINUTES = 30
    #: An admin session ends this long after sign-in, however much it is used (hours).
    ADMIN_SESSION_HOURS = 12

    #: Rights requests from the public form, per client address and site.
    RATELIMIT_RIGHTS_REQUEST = "10/hour"
    #: Where the service's emails go out: smtp://host:port, smtp+starttls://user:pw@host:587
    #: or smtps://user:pw@host:465. Unset: requests that need an email are refused (503).
    SMTP_URL = None
    MAIL_FROM = "privacy@localhost"

    #: The header a trusted proxy or CDN sets to the visitor's ISO 3166 country (or
    #: subdivision, US-CA), e.g. CF-IPCountry, CloudFront-Viewer-Country,
    #: X-Vercel-IP-Country. Empty: no region is known, so every visitor gets opt-in.
    REGION_HEADER = ""
    #: A header with the subdivision apart (CloudFront-Viewer-Country-Region: CA).
    SUBREGION_HEADER = ""

    #: Answer well-formed public checks before Flask runs (consent/api/fastpath.py).
    FAST_CHECK = True
    #: Record well-formed banner submissions before Flask runs (the same module).
    FAST_RECORD = True
    #: "json" or "text"; empty: JSON lines in production, plain text in development.
    LOG_FORMAT = ""
    #: Webhook retries: the first after this many seconds, each next twice as long, at
    #: most WEBHOOK_RETRY_MAX_SECONDS apart; 15 attempts span about 32 hours.
    WEBHOOK_RETRY_BASE_SECONDS = 30
    WEBHOOK_RETRY_MAX_SECONDS = 6 * 3600
    WEBHOOK_MAX_ATTEMPTS = 15
    #: Seconds to wait for a webhook endpoint's answer.
    WEBHOOK_TIMEOUT_SECONDS = 10
    #: Bearer token that opens /metrics; empty: /metrics answers 404 (off the public surface).
    METRICS_TOKEN = ""

    #: No ``pool_pre_ping``: a round trip on every request to guard against a rare event.
    #: A dead connection fails its statement and empties the pool instead; reads are
    #: repeated once (``consent.db.once_more_if_disconnected``), writes answer 503.
    SQLALCHEMY_ENGINE_OPTIONS: dict = {}
    API_TITLE = "Consent service"
    API_VERSION = "v1"
    OPENAPI_VERSION = "3.1.0"
    OPENAPI_URL_PREFIX = "/v1"
    OPENAPI_JSON_PATH = "openapi.json"
    JSON_SORT_KEYS = False


def load_config(app: Flask, test_config: dict | None) -> None:
    """Fill ``app.config`` from defaults, the environment and ``test_config``."""
    app.config.from_object(Config)
    app.config.from_prefixed_env(prefix="CONSENT")
    if test_config:
        app.config.update(test_config)

    _check_types(app)
    for name in ("REGION_HEADER", "SUBREGION_HEADER"):
        if not HEADER_NAME.match(app.config[name]):
            raise ConfigError(
                f"CONSENT_{name} is {app.config[name]!r}; set it to the name of the header "
                "your proxy sets, like CF-IPCountry, or leave it empty."
            )
    if app.config["LOG_FORMAT"] not in ("", "json", "text"):
        raise ConfigError(f"CONSENT_LOG_FORMAT is {app.config['LOG_FORMAT']!r}; set json or text.")
    is_production = app.config["ENV"] == "production"
    database_url = app.config["DATABASE_URL"] or app.config.get("SQLALCHEMY_DATABASE_URI")
    if not database_url:
        database_url = f"sqlite:///{Path(app.instance_path) / 'consent.sqlite'}"
    _check_database_url(database_url)
    app.config["SQLALCHEMY_DATABASE_URI"] = _with_psycopg_driver(database_url)
    if app.config["FORCE_HTTPS"] is None:
        app.config["FORCE_HTTPS"] = is_production

    for name, make in (("SECRET_KEY", _new_secret_key), ("DATA_KEY", _new_data_key)):
        if app.config.get(name):
            continue
        if is_production:
            raise ConfigError(
                f"CONSENT_{name} is not set. In production the service needs it from the "
                f'environment; generate one with: python -c "import secrets, base64; '
                f'print(base64.b64encode(secrets.token_bytes(32)).decode())"'
            )
        app.config[name] = _instance_secret(app, name.lower(), make)
    for encoded in [app.config["DATA_KEY"], *(app.config["OLD_DATA_KEYS"] or [])]:
        if not _is_data_key(encoded):
            raise ConfigError(
                "CONSENT_DATA_KEY (or an entry of CONSENT_OLD_DATA_KEYS) is not base64 of "
                'exactly 32 bytes; make one with: python -c "import secrets, base64; '
                'print(base64.b64encode(secrets.token_bytes(32)).decode())"'
            )
    app.config["PUBLIC_URL"] = _checked_public_url(app.config["PUBLIC_URL"], is_production)


def check_settings() -> None:
    """Read the settings as the app would, raising ConfigError for the first wrong one."""
    load_config(Flask("consent", instance_relative_config=True), None)


def _check_types(app: Flask) -> None:
    """Each setting from the environment has the type of its default."""
    for name, default in vars(Config).items():
        if not name.isupper() or name not in app.config:
            continue
        value = app.config[name]
        if isinstance(default, bool) or name == "FORCE_HTTPS":
            if not isinstance(value, bool) and value is not None:
                raise ConfigError(f"CONSENT_{name} is {value!r}; set it to true or false.")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"CONSENT_{name} is {value!r}; set it to a whole number >= 0.")
        elif isinstance(default, list) and not isinstance(value, list):
            raise ConfigError(f'CONSENT_{name} is {value!r}; set it to a JSON list: ["..."].')
        elif isinstance(default, str) and not isinstance(value, str):
            raise ConfigError(f"CONSENT_{name} is {value!r}; set it to text.")


def _check_database_url(url: str) -> None:
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme not in SUPPORTED_DATABASES:
        raise ConfigError(
            f"CONSENT_DATABASE_URL names {scheme or 'no'} database; the service runs on "
            "PostgreSQL (postgresql://user@host/name) or SQLite (sqlite:////path/file)."
        )


def _checked_public_url(url: str, is_production: bool) -> str:
    """The public base URL without a trailing slash; required in production."""
    if not url:
        if is_production:
            raise ConfigError(
                "CONSENT_PUBLIC_URL is not set. In production every link the service "
                "mints starts with it: set it to e.g. https://consent.example.com"
            )
        return "http://127.0.0.1:5000"
    parts = urlsplit(str(url))
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(
            f"CONSENT_PUBLIC_URL is {url!r}; set it to the service's address, "
            "http(s)://host[:port][/prefix], e.g. https://consent.example.com"
        )
    return str(url).rstrip("/")


def _is_data_key(encoded) -> bool:
    try:
        return len(base64.b64decode(str(encoded), validate=True)) == 32
    except (binascii.Error, ValueError):
        return False


def _with_psycopg_driver(url: str) -> str:
    """Use psycopg 3 for plain ``postgresql://`` URLs."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _new_secret_key() -> str:
    return secrets.token_urlsafe(48)


def _new_data_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def _instance_secret(app: Flask, name: str, make) -> str:
    """Read a development secret from the instance folder, creating it once.

    Several worker processes may start at once: the secret is written to a private
    temporary file and linked into place, so every process reads the same, whole value.
    """
    path = Path(app.instance_path) / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{name}.{os.getpid()}.{secrets.token_hex(4)}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(make())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process got there first: use its value
        finally:
            temporary.unlink()
    return path.read_text().strip()
