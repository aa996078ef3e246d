"""Server API for the site's own backend: API key per site, scoped read or write."""

from __future__ import annotations

from functools import wraps

from flask import g, jsonify, request
from flask.views import MethodView
from flask_smorest import Blueprint, abort

from consent import ledger
from consent.keys import authenticate_key
from consent.models import Site, Subject
from consent.schemas import (
    CheckSchema,
    LinkArgs,
    LinkResultSchema,
    RecordResultSchema,
    ServerCheckArgs,
    ServerRecordArgs,
)
from consent.subjects import (
    find_or_create_subject_by,
    find_subject_by,
    link_visitor,
    record_submission,
)
from consent.tokens import read_visitor_token

blp = Blueprint(
    "server",
    __name__,
    url_prefix="/v1/server",
    description="Called by the site's backend with an API key (Authorization: Bearer).",
)
blp.DEFAULT_ERROR_RESPONSE_NAME = None


def require_key(scope: str):
    """Authenticate the Bearer key (401) and require a scope (403); sets ``g.site``."""

    def decorator(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
            api_key = authenticate_key(presented.strip()) if scheme.lower() == "bearer" else None
            if api_key is None:
                abort(
                    401,
                    message="A valid API key is needed: Authorization: Bearer <key>.",
                    headers={"WWW-Authenticate": 'Bearer realm="consent"'},
                )
            if scope not in api_key.scope_set:
                abort(403, message=f"This API key lacks the {scope!r} scope.")
            g.api_key = api_key
            g.site = api_key.site
            return view(*args, **kwargs)

        return wrapper

    return decorator


def subject_from_args(site: Site, args: dict, *, create: bool) -> tuple[Subject | None, str | None]:
    """Resolve user_id, email or visitor_token to a subject (and the visitor id)."""
    if "visitor_token" in args:
        visitor_id = read_visitor_token(args["visitor_token"], site.key)
        visitor = ledger.find_visitor(site, visitor_id)
        return (visitor.subject if visitor else None), visitor_id
    kind = "user_id" if "user_id" in args else "email"
    if create:
        return find_or_create_subject_by(site, kind, args[kind]), None
    return find_subject_by(site, kind, args[kind]), None


@blp.route("/check")
class ServerCheck(MethodView):
    @blp.arguments(ServerCheckArgs, location="query")
    @blp.response(200, CheckSchema)
    @require_key("read")
    def get(self, args):
        """Answer whether a purpose is allowed for a user id, email or visitor."""
        subject, _ = subject_from_args(g.site, args, create=False)
        verdict = ledger.check_purpose(g.site, subject, args["purpose"], args.get("service"))
        body = {
            "allowed": verdict.allowed,
            "purpose": args["purpose"],
            "service": args.get("service"),
            "reason": verdict.reason,
            "decided_at": verdict.decided_at,
            "expires_at": verdict.expires_at,
        }
        return body, 200, {"Cache-Control": "no-store"}


@blp.route("/records")
class ServerRecords(MethodView):
    @blp.arguments(ServerRecordArgs)
    @blp.response(201, RecordResultSchema)
    @require_key("write")
    def post(self, args):
        """Record decisions on behalf of a logged-in user (or a known visitor)."""
        site = g.site
        if "visitor_token" in args:
            visitor_id = read_visitor_token(args["visitor_token"], site.key)
            result, is_replay = record_submission(
                site,
                visitor_id,
                args,
                idempotency_key=request.headers.get("Idempotency-Key"),
                is_gpc=False,
                ip_truncated=None,
            )
            response = jsonify(result)
            response.status_code = 201
            if is_replay:
                response.headers["Idempotent-Replayed"] = "true"
            return response
        ledger.lock_chain_head(site)
        subject, _ = subject_from_args(site, args, create=True)
        record = ledger.record_decision(
            site,
            subject,
            args["decisions"],
            source=args["source"],
            policy_version=args.get("policy_version"),
            config_hash=args.get("config_hash"),
            language=args.get("language"),
        )
        return {"record": record}, 201


@blp.route("/links")
class Links(MethodView):
    @blp.arguments(LinkArgs)
    @blp.response(201, LinkResultSchema)
    @require_key("write")
    def post(self, args):
        """Link a visitor to the site's user id so consent follows them across devices."""
        site = g.site
        visitor_id = read_visitor_token(args["visitor_token"], site.key)
        ledger.lock_chain_head(site)
        subject, record = link_visitor(site, visitor_id, args["user_id"])
        return {"subject": subject.pseudonym, "record": record}, 201
