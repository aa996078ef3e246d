"""The JSON API: one error shape, CORS per site, JSON-only bodies, OpenAPI document."""

from __future__ import annotations

import logging
import re

from apispec import BasePlugin
from flask import Flask, g, request
from flask_smorest import Api, abort
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from consent import validation
from consent.api import public, server, wellknown
from consent.api.common import CORS_EXPOSED_HEADERS, compress, is_allowed_origin
from consent.db import db, describe_database_error
from consent.decision import Reason
from consent.errors import Conflict, InvalidRequest
from consent.limits import LIMITED_ENDPOINTS
from consent.mail import MailUnavailable
from consent.schemas import ErrorSchema
from consent.sites import get_site_by_key

log = logging.getLogger(__name__)

#: Endpoints that answer "may I?": on any failure they still say ``allowed: false``.
CHECK_ENDPOINTS = {"public.Check", "server.ServerCheck"}
API_BLUEPRINTS = {"public", "server", "wellknown"}


class ConsentApi(Api):
    """flask-smorest's Api with the service's own error shape."""

    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error: HTTPException):
        """Answer API errors as JSON; leave pages to Flask's HTML error pages."""
        # Under /v1/ even a URL that matches no route (404, 405) is answered as JSON.
        if request.blueprint not in API_BLUEPRINTS and not request.path.startswith("/v1/"):
            return error
        data = getattr(error, "data", None) or {}
        messages = data.get("errors") or data.get("messages")
        # The exception's own headers (Allow on a 405, say), less its HTML content type.
        headers = {
            name: value for name, value in error.get_headers() if name.lower() != "content-type"
        }
        headers.update(data.get("headers") or {})
        return error_response(
            error.code or 500,
            data.get("message")
            or (messages and "The request has invalid fields.")
            or error.description,
            _flatten(messages) if messages else None,
            headers,
        )


def error_response(
    code: int, message: str, errors: dict | None = None, headers: dict | None = None
):
    """The one JSON error shape: ``error``, ``message`` and per-field ``errors``."""
    payload: dict = {
        "error": HTTP_STATUS_CODES.get(code, "error").lower().replace(" ", "_").replace("'", ""),
        "message": message,
    }
    if errors:
        payload["errors"] = errors
    if request.endpoint in CHECK_ENDPOINTS:
        # A check that could not be answered still answers: not allowed.
        reason = {429: Reason.RATE_LIMITED}.get(
            code, Reason.UNAVAILABLE if code >= 500 else Reason.ERROR
        )
        payload.update(allowed=False, reason=reason)
    headers = dict(headers or {})
    if code == 503:
        headers.setdefault("Retry-After", "5")
    return payload, code, headers


def _flatten(messages: dict, prefix: str = "") -> dict[str, list[str]]:
    """Turn webargs' nested {location: {field: {0: [...]}}} into {"field.0": [...]}."""
    if set(messages) <= {"json", "query", "form", "headers", "files", "view_args"}:
        merged: dict[str, list[str]] = {}
        for nested in messages.values():
            # A message about the whole body (invalid JSON) has no field name.
            merged.update(_flatten(nested) if isinstance(nested, dict) else {"body": nested})
        return merged
    flat: dict[str, list[str]] = {}
    for key, value in messages.items():
        # marshmallow's "_schema" is the object itself: the body, or the item holding it.
        name = (prefix[:-1] or "body") if key == "_schema" else f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = [str(item) for item in value] if isinstance(value, list) else [str(value)]
    return flat


#: What any API operation may answer when the database fails (consent.db).
DATABASE_ANSWERS = {
    409: "A concurrent request created the same thing first: nothing was written, retry.",
    503: "The database cannot be reached, is read-only or busy: nothing was written; "
    "see Retry-After. A check still answers allowed: false.",
    507: "The database is full: nothing was written.",
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}}


class FailureAnswers(BasePlugin):
    """Declare on every operation the answers it can give on failure, not only its own.

    The database's (409, 503, 507) on all of them; 429 where ``consent.limits`` limits.
    """

    def __init__(self, app: Flask) -> None:
        self.app = app

    def operation_helper(self, path=None, operations=None, **kwargs) -> None:
        limited = {
            re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
            for rule in self.app.url_map.iter_rules()
            if rule.endpoint in LIMITED_ENDPOINTS
        }
        answers = dict(DATABASE_ANSWERS)
        if path in limited:
            answers[429] = (
                "Too many requests from this address; see Retry-After. "
                "A check still answers allowed: false."
            )
        for operation in (operations or {}).values():
            responses = operation.setdefault("responses", {})
            for code, description in answers.items():
                if code in responses or str(code) in responses:
                    continue
                responses[str(code)] = {
                    "description": description,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                    **({"headers": RETRY_AFTER} if code in (429, 503) else {}),
                }


def init_api(app: Flask) -> ConsentApi:
    """Attach the API, its blueprints and its error handling to the app."""
    app.config.setdefault("COMPRESS_REGISTER", False)
    app.config.setdefault("COMPRESS_ALGORITHM", ["br", "gzip"])
    compress.init_app(app)
    api = ConsentApi(app, spec_kwargs={"extra_plugins": [FailureAnswers(app)]})
    api.spec.components.security_scheme(
        server.API_KEY_SCHEME,
        {"type": "http", "scheme": "bearer", "description": "prefix.secret from issue-key"},
    )
    api.register_blueprint(public.blp)
    api.register_blueprint(server.blp)
    app.register_blueprint(wellknown.bp)

    @app.errorhandler(InvalidRequest)
    def _invalid_request(error: InvalidRequest):
        return error_response(422, error.message, {error.field: [error.message]})

    @app.errorhandler(MailUnavailable)
    def _mail_unavailable(error: MailUnavailable):
        log.error("mail not sent on %s: %s", request.endpoint, error)
        return error_response(503, "The email could not be sent: nothing was registered.")

    @app.errorhandler(Conflict)
    def _conflict(error: Conflict):
        return error_response(409, str(error))

    @app.errorhandler(DBAPIError)
    def _database_unavailable(error: DBAPIError):
        # Fail closed: log the fault, tell the client to retry, never a stack trace.
        log.error("database error on %s: %s", request.endpoint, error.__class__.__name__)
        db.session.rollback()
        return error_response(*describe_database_error(error))

    app.before_request(_require_json_body)
    app.after_request(_add_cors_headers)
    return api


def _require_json_body():
    """JSON endpoints take application/json only: a cross-site form cannot post."""
    if request.blueprint not in ("public", "server"):
        return
    if request.method in ("POST", "PUT", "PATCH") and not request.is_json:
        if not request.content_length and request.endpoint == "public.Shown":
            return
        abort(415, message="Send the body as application/json.")


def _add_cors_headers(response):
    """Let only the site's allowed origins read public API answers from a browser."""
    origin = request.headers.get("Origin")
    if request.blueprint != "public" or not origin:
        return response
    response.vary.add("Origin")
    allowed_origins = g.get("allowed_origins")
    if allowed_origins is None:  # a preflight, or an error before the site was read
        site_key = (request.view_args or {}).get("site_key")
        try:
            site = get_site_by_key(site_key) if site_key else None
        except DBAPIError:  # the database is down: the answer goes out, without CORS
            db.session.rollback()
            site = None
        allowed_origins = site.allowed_origins if site else []
    if request.endpoint == "public.BannerConfig" and response.status_code in (403, 404):
        # The banner reads why it may not run here, and says so in the page's console.
        if validation.is_origin(origin) or origin == "null":
            response.headers["Access-Control-Allow-Origin"] = origin
    elif is_allowed_origin(allowed_origins, origin):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSED_HEADERS
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = (
                "Content-Type, X-Consent-Token, Idempotency-Key"
            )
            # Browsers cap it (Chromium at 2 h, Firefox at 24 h): a returning visitor's
            # record then costs one request, not a preflight and a request.
            response.headers["Access-Control-Max-Age"] = "86400"
    return response
