"""The public check's and the banner's record's everyday answers, given before Flask runs.

Analytics and marketing code ask the check on every page view, and every banner choice
is a record: the service's hottest paths. Flask and its extensions cost more per request
than the check itself and a third of a record (``bench/check_throughput.py``,
``bench/record_throughput.py``). This WSGI layer answers a well-formed request of either
kind directly, with the same parts Flask would use: the same token check, the same
statements (``consent.check.check_visitor``; ``consent.ledger``'s group commit), the same
rate-limit counter, the same security and CORS headers, and the same answer
(``consent.api.common``).

It only ever answers what Flask would answer 200 (a check) or 201 (a record) to, and it
leaves a request to Flask before anything is written. Everything else goes to Flask
untouched, which answers it as always: another method or URL, a parameter or body it does
not take as it is, a bad or foreign token, an unknown site, a refused origin or rate
limit, a site whose configuration changed since this process last read it, a banner
configuration not yet seen here, a database error. ``tests/test_fastpath.py`` sends the
same requests both ways and compares the answers.
"""

from __future__ import annotations

import io
import json
import logging
import re
import sqlite3
import threading
import weakref
from urllib.parse import parse_qsl

import psycopg
from flask import Flask
from flask_limiter import Limiter
from marshmallow import ValidationError
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from werkzeug.wsgi import get_host

from consent import regions
from consent.api.common import (
    check_answer,
    cors_headers,
    is_allowed_origin,
    recording_options,
)
from consent.check import check_visitor
from consent.db import autocommit_engine, db
from consent.errors import InvalidRequest
from consent.ledger import StaleFacts, append_submission, prepare_visitor_submission
from consent.limits import COUNTED_BY_FAST_PATH, LimitCounter
from consent.ops import ROUTE_KEY
from consent.schemas import RecordArgs
from consent.security import headers_outside_flask
from consent.site_facts import kept_copy
from consent.tokens import open_visitor_token, visitor_serializer
from consent.validation import PURPOSE_KEY, SITE_KEY
from consent.visitors import live_subject

log = logging.getLogger(__name__)

CHECK_PATH = re.compile(r"/v1/sites/([^/]+)/check\Z")
RECORD_PATH = re.compile(r"/v1/sites/([^/]+)/records\Z")
#: Bodies larger than this go to Flask (a banner's choice is a few hundred bytes).
MAX_RECORD_BODY = 16 * 1024
#: The record route's arguments (schemas are costly to build and safe to share).
RECORD_ARGS = RecordArgs()
#: ``environ`` key: a failure after the fast path submitted a record, for the view to raise.
FAILED_AFTER_SUBMIT = "consent.failed_after_submit"
#: Parameter values answered here; anything else (still maybe valid) goes to Flask.
PLAIN_VALUE = PURPOSE_KEY
#: SQLAlchemy's and the drivers' own (the statement runs on the driver).
DATABASE_ERRORS = (DBAPIError, sqlite3.Error, psycopg.Error)


class FastPath:
    """WSGI middleware around Flask's ``wsgi_app``: see the module's docstring."""

    def __init__(self, app: Flask, limiter: Limiter | None) -> None:
        self.app = app
        self.flask_wsgi_app = app.wsgi_app
        self.counter = LimitCounter(limiter, app, "public.Check") if limiter else None
        self.record_counter = LimitCounter(limiter, app, "public.Records") if limiter else None
        self.routes = {
            "GET": (CHECK_PATH, "public.Check", self.answer) if app.config["FAST_CHECK"] else None,
            "POST": (RECORD_PATH, "public.Records", self.record)
            if app.config["FAST_RECORD"]
            else None,
        }
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
        fast = self.routes.get(environ.get("REQUEST_METHOD"))
        if fast is not None and (matched := fast[0].match(environ.get("PATH_INFO", ""))):
            _, route, answer_it = fast
            try:
                answer = answer_it(environ, matched.group(1))
            except Exception as error:  # noqa: BLE001 - Flask answers it, with its handling
                # A database fault is Flask's to log and answer; anything else is a bug here.
                is_database = isinstance(error, DATABASE_ERRORS)
                log.warning(
                    "fast path left the request to Flask: %s",
                    error.__class__.__name__,
                    exc_info=not is_database,
                )
                answer = None
            if answer is not None:
                environ[ROUTE_KEY] = route
                status, headers, body = answer
                start_response(status, headers)
                return [body]
        return self.flask_wsgi_app(environ, start_response)

    def visitor_in(self, environ: dict, site_key: str) -> tuple[bool, str | None]:
        """Whether the request's visitor token, if it has one, is readable and this
        site's; and the visitor it names (None without a token)."""
        token = environ.get("HTTP_X_CONSENT_TOKEN")
        if not token:
            return True, None
        payload = open_visitor_token(self.serializer, token)
        if payload is None or payload.site != site_key:
            return False, None
        return True, payload.visitor

    def json_answer(self, status: str, answer, headers: list, environ: dict):
        """(status, headers, body) of a JSON answer, compact as Flask's, with its headers
        and the security headers."""
        body = self.app.json.dumps(answer, separators=(",", ":")).encode() + b"\n"
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            *headers,
        ]
        return status, headers + self.security_headers(environ), body

    def answer(self, environ: dict, site_key: str):
        """(status, headers, body) for a check answered here, or None for Flask."""
        args = _plain_arguments(environ.get("QUERY_STRING", ""))
        if args is None or not SITE_KEY.match(site_key):
            return None
        is_readable, visitor_id = self.visitor_in(environ, site_key)
        if not is_readable:
            return None  # Flask answers 401 or 403
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
        answer, headers = check_answer(found, args, origin, _host_url(environ, origin))
        return self.json_answer("200 OK", answer, headers, environ)

    def record(self, environ: dict, site_key: str):
        """(status, headers, body) for a record answered here, or None for Flask.

        Everything is checked before the submission joins a batch, and nothing is
        written until then; a failure after that (an idempotency conflict, a database
        fault) is handed to Flask's view to raise (``FAILED_AFTER_SUBMIT``), so that it
        is answered as always and never recorded twice.
        """
        args = _record_arguments(environ)
        if args is None or not SITE_KEY.match(site_key):
            return None
        is_readable, visitor_id = self.visitor_in(environ, site_key)
        if not is_readable:
            return None  # Flask answers 401 or 403
        origin = environ.get("HTTP_ORIGIN")
        host_url = _host_url(environ, origin)
        # The process's copy of the site, confirmed current under the chain lock.
        site = kept_copy(self.app, site_key)
        if (
            site is None  # Flask reads the site afresh (or answers 404)
            or (origin and not is_allowed_origin(site.allowed_origins, origin, host_url))
            or (args.get("config_hash") is not None and args["config_hash"] not in site.served)
        ):
            return None
        subject = None
        if visitor_id is not None:
            with self.engine.connect() as connection:
                subject = live_subject(site.id, visitor_id, connection)
        address = environ.get("REMOTE_ADDR")
        submitted = False
        try:
            with self.app.app_context():
                try:
                    options = recording_options(
                        site, args, regions.environ_header(environ), address, self.app.config
                    )
                    prepared = prepare_visitor_submission(
                        site, visitor_id, subject, args, **options
                    )
                except InvalidRequest:
                    return None  # Flask answers 422, naming the field
                prepared.checked_version = site.config_version
                counted = f"{site_key}/{address or 'unknown'}"
                if self.record_counter and not self.record_counter.hit(counted):
                    return None  # Flask counts once more, still over the limit: 429
                submitted = True
                answer, is_replay = append_submission(prepared)
            headers = [("Idempotent-Replayed", "true")] if is_replay else []
            headers += cors_headers(site.allowed_origins, origin, host_url)
            return self.json_answer("201 CREATED", answer, headers, environ)
        except StaleFacts:
            # Not written: Flask checks it again against the site as it is now, and the
            # limiter, which the fast path already counted it on, lets it through.
            environ[COUNTED_BY_FAST_PATH] = True
            return None
        except Exception as error:
            if not submitted:
                raise  # nothing was written: Flask answers the request afresh
            # Maybe written: the view raises it as it is (never records it again), and
            # the limiter, which the fast path already counted it on, lets it through.
            environ[FAILED_AFTER_SUBMIT] = error
            environ[COUNTED_BY_FAST_PATH] = True
            return None


def _host_url(environ: dict, origin: str | None) -> str:
    """The request's own origin as Flask's ``request.host_url`` (needed with an Origin)."""
    return f"{environ['wsgi.url_scheme']}://{get_host(environ)}/" if origin else ""


def _record_arguments(environ: dict) -> dict | None:
    """A JSON body as the record route's schema loads it; None for anything else.

    The body is put back for Flask, which reads it again if it answers the request.
    """
    if environ.get("CONTENT_TYPE") != "application/json":
        return None
    declared = environ.get("CONTENT_LENGTH") or ""
    if not declared.isdigit() or environ.get("HTTP_TRANSFER_ENCODING"):
        return None  # as Werkzeug reads it: no sign, space or underscore; not chunked
    length = int(declared)
    if not 0 < length <= MAX_RECORD_BODY:
        return None
    body = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(body)
    try:
        # Strict UTF-8 as Flask's parser reads it (json.loads would guess UTF-16 or a BOM).
        return RECORD_ARGS.load(json.loads(body.decode("utf-8")))
    except (ValueError, RecursionError, ValidationError):
        return None


def _plain_arguments(query_string: str) -> dict[str, str] | None:
    """``purpose`` and maybe ``service``, each once and plain; None for anything else."""
    args: dict[str, str] = {}
    for name, value in parse_qsl(query_string, keep_blank_values=True):
        if name not in ("purpose", "service") or name in args or not PLAIN_VALUE.match(value):
            return None
        args[name] = value
    return args if "purpose" in args else None


def install_fast_path(app: Flask, limiter: Limiter | None) -> None:
    """Put the fast path in front of Flask (``FAST_CHECK``, ``FAST_RECORD``: on by default)."""
    # Flask-Limiter's optional X-RateLimit-* headers are not reproduced here.
    is_wanted = app.config["FAST_CHECK"] or app.config["FAST_RECORD"]
    if is_wanted and not app.config.get("RATELIMIT_HEADERS_ENABLED"):
        app.wsgi_app = app.extensions["consent.fast_path"] = FastPath(app, limiter)
