"""Running it: request ids and request metrics for every answer; health, readiness, metrics.

``RequestTracking`` wraps the whole WSGI app, the check's fast path included, so every
request, whichever layer answers it, gets an ``X-Request-Id`` (the caller's, when it is
plain, else a new one), is counted and, for checks and records, timed.

``/healthz`` says the process answers (it touches nothing); ``/readyz`` says whether this
instance can serve: the database answers, its schema is at the latest migration and,
when configured, Redis answers; otherwise 503 with the reason. ``/metrics`` is off the
public surface: it answers 404 unless ``METRICS_TOKEN`` is set, and then only to
``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
import os
import re
import time
from pathlib import Path

import redis
from alembic.script import ScriptDirectory
from flask import Blueprint, Flask, abort, current_app, request
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from consent import metrics
from consent.db import SCHEMA_MISSING, db, describe_database_error
from consent.logs import REQUEST_ID

bp = Blueprint("ops", __name__)

#: WSGI environ keys: the request's id, and the route that answered it.
REQUEST_ID_KEY = "consent.request_id"
ROUTE_KEY = "consent.route"
#: A caller's request id is kept only if it is short and plain (it is logged).
PLAIN_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")
MIGRATIONS = Path(__file__).parent / "migrations"


class RequestTracking:
    """WSGI middleware: see the module's docstring."""

    def __init__(self, wsgi_app) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict, start_response):
        started = time.perf_counter()
        given = environ.get("HTTP_X_REQUEST_ID", "")
        request_id = given if given and PLAIN_REQUEST_ID.match(given) else os.urandom(16).hex()
        environ[REQUEST_ID_KEY] = request_id
        reset = REQUEST_ID.set(request_id)
        answered = []

        def start_with_request_id(status, headers, exc_info=None):
            answered.append(status)
            headers = [(name, value) for name, value in headers if name.lower() != "x-request-id"]
            headers.append(("X-Request-Id", request_id))
            return start_response(status, headers, exc_info)

        try:
            return self.wsgi_app(environ, start_with_request_id)
        finally:
            REQUEST_ID.reset(reset)
            if answered:
                metrics.count_request(
                    environ.get(ROUTE_KEY) or "unmatched",
                    environ.get("REQUEST_METHOD", ""),
                    int(answered[-1].split(" ", 1)[0]),
                    time.perf_counter() - started,
                )


def init_ops(app: Flask) -> None:
    """Register the health and metrics routes and name each request's route."""
    app.register_blueprint(bp)
    metrics.init_metrics()

    @app.before_request
    def _name_route():
        request.environ[ROUTE_KEY] = request.endpoint


def track_requests(app: Flask) -> None:
    """Wrap the app (after the fast path, before proxy handling) in ``RequestTracking``."""
    app.wsgi_app = RequestTracking(app.wsgi_app)


@bp.get("/healthz")
def healthz():
    """Say the process is alive; touch nothing else."""
    return {"status": "ok"}, 200, {"Cache-Control": "no-store"}


@bp.get("/readyz")
def readyz():
    """Say whether this instance can serve: database, schema, Redis; 503 with the reason."""
    checks: dict[str, str] = {}
    problem = _database_problem(checks) or _redis_problem(checks)
    body = {"status": "unavailable" if problem else "ok", "checks": checks}
    if problem:
        body["reason"] = problem
        return body, 503, {"Cache-Control": "no-store", "Retry-After": "5"}
    return body, 200, {"Cache-Control": "no-store"}


def _database_problem(checks: dict[str, str]) -> str | None:
    try:
        with db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            checks["database"] = "ok"
            current = connection.scalar(text("SELECT version_num FROM alembic_version"))
    except DBAPIError as error:
        status, message = describe_database_error(error)
        if message != SCHEMA_MISSING:
            checks["database"] = "unavailable"
            return message
        current = None
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    if current != head:
        checks["schema"] = f"at {current or 'no migration'}, latest is {head}"
        return f"The schema is at {current or 'no migration'}, not {head}: run `consent init-db`."
    checks["schema"] = "ok"
    return None


def _redis_problem(checks: dict[str, str]) -> str | None:
    url = str(current_app.config.get("RATELIMIT_STORAGE_URL") or "")
    if not url.startswith(("redis://", "rediss://")):
        return None
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except redis.RedisError:
        checks["redis"] = "unavailable"
        return "Redis (CONSENT_RATELIMIT_STORAGE_URL) cannot be reached."
    checks["redis"] = "ok"
    return None


@bp.get("/metrics")
def metrics_page():
    """The Prometheus metrics, for a caller holding ``METRICS_TOKEN``; 404 for others."""
    token = current_app.config.get("METRICS_TOKEN")
    presented = request.headers.get("Authorization", "")
    if not token or not hmac.compare_digest(presented.encode(), f"Bearer {token}".encode()):
        abort(404)
    return (
        metrics.exposition(),
        200,
        {"Content-Type": "text/plain; version=0.0.4; charset=utf-8", "Cache-Control": "no-store"},
    )
