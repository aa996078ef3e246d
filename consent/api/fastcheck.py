"""The public check's everyday answer, given before Flask runs.

Analytics and marketing code ask the check on every page view, so it is the service's
hottest path; Flask and its extensions cost more per request than the check itself
(``bench/check_throughput.py``). This WSGI layer answers a well-formed check directly,
with the same parts Flask would use: the same token check, the same one SQL statement
(``consent.check.check_visitor``), the same rate-limit counter, the same security headers, and
the same answer (``consent.api.common.check_answer``).

It only ever answers what Flask would answer 200 to. Everything else goes to Flask
untouched, which answers it as always: another method or URL, a parameter it does not
recognise, a bad or foreign token, an unknown site, a refused rate limit, a database
error (the check then says ``allowed: false``). ``tests/test_fastcheck.py`` sends the
same requests both ways and compares status, headers and body.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import weakref
from urllib.parse import parse_qsl

import psycopg
from flask import Flask
from flask_limiter import Limiter
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from werkzeug.wsgi import get_host

from consent import regions
from consent.api.common import check_answer
from consent.check import check_visitor
from consent.db import autocommit_engine, db
from consent.limits import LimitCounter
from consent.ops import ROUTE_KEY
from consent.security import headers_outside_flask
from consent.tokens import open_visitor_token, visitor_serializer
from consent.validation import PURPOSE_KEY, SITE_KEY

log = logging.getLogger(__name__)

CHECK_PATH = re.compile(r"/v1/sites/([^/]+)/check\Z")
#: Parameter values answered here; anything else (still maybe valid) goes to Flask.
PLAIN_VALUE = PURPOSE_KEY
#: SQLAlchemy's and the drivers' own (the statement runs on the driver).
DATABASE_ERRORS = (DBAPIError, sqlite3.Error, psycopg.Error)


class FastCheck:
    """WSGI middleware around Flask's ``wsgi_app``: see the module's docstring."""

    def __init__(self, app: Flask, limiter: Limiter | None) -> None:
        self.app = app
        self.flask_wsgi_app = app.wsgi_app
        self.counter = LimitCounter(limiter, app, "public.Check") if limiter else None
        self.security_headers = headers_outside_flask()
        self.serializer = visitor_serializer(app.config["SECRET_KEY"])
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        """The check's own autocommit pool, made on first use (in the worker process).

        It is emptied whenever the app's engine is disposed (a test, a failover drill)
        and when the app goes away, so no connection outlives its app.
        """
        with self._engine_lock:  # gthread workers: one pool per process, not per thread
            if self._engine is None:
                with self.app.app_context():
                    main_engine = db.engine
                engine = autocommit_engine(main_engine.url)
                event.listen(main_engine, "engine_disposed", lambda _: engine.dispose())
                weakref.finalize(self, engine.dispose)
                self._engine = engine
        return self._engine

    def __call__(self, environ: dict, start_response):
        matched = CHECK_PATH.match(environ.get("PATH_INFO", ""))
        if matched and environ.get("REQUEST_METHOD") == "GET":
            try:
                answer = self.answer(environ, matched.group(1))
            except Exception as error:  # noqa: BLE001 - Flask answers it, with its handling
                # A database fault is Flask's to log and answer; anything else is a bug here.
                is_database = isinstance(error, DATABASE_ERRORS)
                log.warning(
                    "fast check left the request to Flask: %s",
                    error.__class__.__name__,
                    exc_info=not is_database,
                )
                answer = None
            if answer is not None:
                environ[ROUTE_KEY] = "public.Check"
                status, headers, body = answer
                start_response(status, headers)
                return [body]
        return self.flask_wsgi_app(environ, start_response)

    def answer(self, environ: dict, site_key: str):
        """(status, headers, body) for a check answered here, or None for Flask."""
        args = _plain_arguments(environ.get("QUERY_STRING", ""))
        if args is None or not SITE_KEY.match(site_key):
            return None
        visitor_id = None
        token = environ.get("HTTP_X_CONSENT_TOKEN")
        if token:
            payload = open_visitor_token(self.serializer, token)
            if payload is None or payload.get("site") != site_key:
                return None  # Flask answers 401 or 403
            visitor_id = payload["visitor"]
        address = environ.get("REMOTE_ADDR") or "unknown"
        if self.counter is not None and not self.counter.hit(f"{site_key}/{address}"):
            return None  # Flask counts once more, still over the limit, and answers 429
        header = regions.environ_header(environ)
        found = check_visitor(
            site_key,
            visitor_id,
            args["purpose"],
            args.get("service"),
            region=regions.request_region(header, self.app.config),
            is_gpc=regions.sends_gpc(header),
            engine=self.engine,
        )
        if found is None:
            return None  # Flask answers 404
        origin = environ.get("HTTP_ORIGIN")
        host_url = f"{environ['wsgi.url_scheme']}://{get_host(environ)}/" if origin else ""
        answer, headers = check_answer(found, args, origin, host_url)
        body = self.app.json.dumps(answer, separators=(",", ":")).encode() + b"\n"
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            *headers,
        ]
        return "200 OK", headers + self.security_headers(environ), body


def _plain_arguments(query_string: str) -> dict[str, str] | None:
    """``purpose`` and maybe ``service``, each once and plain; None for anything else."""
    args: dict[str, str] = {}
    for name, value in parse_qsl(query_string, keep_blank_values=True):
        if name not in ("purpose", "service") or name in args or not PLAIN_VALUE.match(value):
            return None
        args[name] = value
    return args if "purpose" in args else None


def install_fast_check(app: Flask, limiter: Limiter | None) -> None:
    """Put the fast path in front of Flask (``FAST_CHECK``, on by default)."""
    # Flask-Limiter's optional X-RateLimit-* headers are not reproduced here.
    if app.config["FAST_CHECK"] and not app.config.get("RATELIMIT_HEADERS_ENABLED"):
        app.wsgi_app = app.extensions["consent.fast_check"] = FastCheck(app, limiter)
