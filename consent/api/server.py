"""Server API for the site's own backend: API key per site, scoped read or write."""

from __future__ import annotations

import csv
import io
from functools import wraps

from flask import Response, current_app, g, jsonify, request, stream_with_context
from flask.views import MethodView
from flask_smorest import abort

from consent import archive, marketing, metrics, regions, rights, rights_requests
from consent.api.common import ApiBlueprint, created, record_answer
from consent.archive import require_served
from consent.check import check_purpose
from consent.db import db
from consent.errors import InvalidRequest
from consent.keys import authenticate_key
from consent.ledger import record_for_person, record_submission
from consent.models import Site, Subject
from consent.schemas import (
    BannerVersionSchema,
    BulkCheckArgs,
    BulkCheckSchema,
    CheckSchema,
    ConsentReceiptSchema,
    CorrectionArgs,
    ErasureArgs,
    ExportArgs,
    LinkArgs,
    LinkResultSchema,
    RecordResultSchema,
    RightsRequestReceiptSchema,
    RightsResultSchema,
    ServerCheckArgs,
    ServerRecordArgs,
    ServerRightsRequestArgs,
    SubjectExportSchema,
    SuppressionArgs,
    SuppressionPageSchema,
    UnsubscribeLinksArgs,
    UnsubscribeLinksSchema,
)
from consent.site_facts import facts_of
from consent.subjects import (
    find_or_create_subject_by,
    find_or_create_subject_with,
    find_subject_by,
    link_visitor,
)
from consent.tokens import read_visitor_token
from consent.visitors import find_visitor
from consent.widget import load_asset

blp = ApiBlueprint(
    "server",
    __name__,
    url_prefix="/v1/server",
    description="Called by the site's backend with an API key (Authorization: Bearer).",
)

#: Routes that take lists of up to 10,000 addresses get a larger body limit.
LIST_ENDPOINTS = {"server.BulkCheck", "server.UnsubscribeLinks"}


@blp.before_request
def _allow_larger_list_bodies():
    if request.endpoint in LIST_ENDPOINTS:
        request.max_content_length = current_app.config["LIST_MAX_CONTENT_LENGTH"]


#: The OpenAPI security scheme every server route requires (registered in consent.api).
API_KEY_SCHEME = "ApiKey"


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

        wrapper = blp.doc(security=[{API_KEY_SCHEME: []}])(wrapper)
        wrapper = blp.alt_response(401, response="UNAUTHORIZED")(wrapper)
        return blp.alt_response(403, response="FORBIDDEN")(wrapper)

    return decorator


def subject_from_args(site: Site, args: dict, *, create: bool) -> tuple[Subject | None, str | None]:
    """Resolve user_id, email or visitor_token to a subject (and the visitor id)."""
    if "visitor_token" in args:
        visitor_id = read_visitor_token(args["visitor_token"], site.key)
        visitor = find_visitor(site, visitor_id)
        return (visitor.subject if visitor else None), visitor_id
    kind = "user_id" if "user_id" in args else "email"
    if create:
        return find_or_create_subject_by(site, kind, args[kind]), None
    return find_subject_by(site, kind, args[kind]), None


def was_erased(site: Site, args: dict) -> bool:
    """Whether the email or user id in ``args`` belonged to an erased person."""
    for kind in rights.IDENTIFIER_KINDS:
        if kind in args:
            return rights.is_erased_identifier(site, kind, args[kind])
    return False


def actor() -> str:
    """How the access log names the caller."""
    return f"api_key:{g.api_key.prefix}"


@blp.route("/check")
class ServerCheck(MethodView):
    @require_key("read")
    @blp.arguments(ServerCheckArgs, location="query")
    @blp.response(200, CheckSchema)
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    def get(self, args):
        """Answer whether a purpose is allowed for a user id, email or visitor."""
        subject, _ = subject_from_args(g.site, args, create=False)
        verdict = check_purpose(
            g.site,
            subject,
            args["purpose"],
            args.get("service"),
            is_identifier_erased=subject is None and was_erased(g.site, args),
            region=args.get("region"),
            is_gpc=args["gpc"],
        )
        body = verdict.body(args["purpose"], args.get("service"))
        metrics.count_check(verdict.reason)
        return body, 200, {"Cache-Control": "no-store"}


@blp.route("/records")
class ServerRecords(MethodView):
    @require_key("write")
    @blp.arguments(ServerRecordArgs)
    @blp.response(201, RecordResultSchema)
    @blp.alt_response(415, response="UNSUPPORTED_MEDIA_TYPE")
    @blp.doc(
        parameters=[
            {
                "in": "header",
                "name": "Idempotency-Key",
                "schema": {"type": "string"},
                "description": "A retry with the same key records nothing new.",
            }
        ]
    )
    def post(self, args):
        """Record decisions on behalf of a logged-in user (or a known visitor)."""
        site = g.site
        require_served(site, args.get("config_hash"), load_asset("consent.js"))
        idempotency_key = request.headers.get("Idempotency-Key")
        answer = record_answer(site.key)
        where = {
            "region": args.get("region"),
            "mode": regions.mode_for(site.region_rules, args.get("region")),
        }
        if "visitor_token" in args:
            visitor_id = read_visitor_token(args["visitor_token"], site.key)
            result, is_replay = record_submission(
                facts_of(site),
                visitor_id,
                args,
                answer=answer,
                idempotency_key=idempotency_key,
                is_gpc=False,
                ip_truncated=None,
                **where,
            )
        else:

            def subject_of():
                if "user_id" in args and "email" in args:  # attach the email in one call
                    return find_or_create_subject_with(site, args["user_id"], args["email"])
                return subject_from_args(site, args, create=True)[0]

            result, is_replay = record_for_person(
                site, subject_of, args, answer=answer, idempotency_key=idempotency_key, **where
            )
        return created(result, is_replay=is_replay)


@blp.route("/links")
class Links(MethodView):
    @require_key("write")
    @blp.arguments(LinkArgs)
    @blp.response(201, LinkResultSchema)
    @blp.alt_response(415, response="UNSUPPORTED_MEDIA_TYPE")
    def post(self, args):
        """Link a visitor to the site's user id so consent follows them across devices."""
        site = g.site
        visitor_id = read_visitor_token(args["visitor_token"], site.key)
        subject, record = link_visitor(site, visitor_id, args["user_id"])
        return {"subject": subject.pseudonym, "record": record}, 201


@blp.route("/bulk-check")
class BulkCheck(MethodView):
    @require_key("read")
    @blp.arguments(BulkCheckArgs)
    @blp.response(200, BulkCheckSchema)
    @blp.alt_response(415, response="UNSUPPORTED_MEDIA_TYPE")
    def post(self, args):
        """Before a send: which of up to 10,000 emails or user ids may be contacted."""
        kind, values = (
            ("email", args["emails"]) if "emails" in args else ("user_id", args["user_ids"])
        )
        results = marketing.bulk_check(
            g.site, args["purpose"], kind, values, actor(), region=args.get("region")
        )
        return {
            "purpose": args["purpose"],
            "allowed_count": sum(result["allowed"] for result in results),
            "results": results,
        }


SUPPRESSION_COLUMNS = ["email", "user_id", "reason", "decided_at"]


@blp.route("/suppression")
class Suppression(MethodView):
    @require_key("read")
    @blp.arguments(SuppressionArgs, location="query")
    @blp.response(200, SuppressionPageSchema)
    @blp.alt_response(
        200,
        schema={"type": "string"},
        content_type="text/csv",
        description="format=json: a page; format=csv: every entry, streamed",
    )
    def get(self, args):
        """Everyone who must not be contacted for a purpose: paged JSON or streamed CSV."""
        site = g.site
        marketing.log_suppression_read(site, args["purpose"], actor(), args)
        if args["format"] == "csv":
            return Response(
                stream_with_context(_suppression_csv(site.id, args["purpose"], args["after"])),
                mimetype="text/csv",
                headers={
                    "Content-Disposition": (
                        f'attachment; filename="suppression-{site.key}-{args["purpose"]}.csv"'
                    ),
                    "Cache-Control": "no-store",
                },
            )
        items = []
        for row in marketing.suppression_rows(site, args["purpose"], after=args["after"]):
            items.append(row)
            if len(items) == args["limit"]:
                break
        next_after = items[-1].subject_id if len(items) == args["limit"] else None
        return {"items": items, "next_after": next_after}, 200, {"Cache-Control": "no-store"}


def _suppression_csv(site_id: int, purpose: str, after: int):
    # The body streams once the request's session is gone: read the site afresh.
    rows = marketing.suppression_rows(db.session.get(Site, site_id), purpose, after=after)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(SUPPRESSION_COLUMNS)
    for row in rows:
        writer.writerow(
            [
                row.email or "",
                row.user_id or "",
                row.reason,
                row.decided_at.isoformat() if row.decided_at else "",
            ]
        )
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


@blp.route("/unsubscribe-links")
class UnsubscribeLinks(MethodView):
    @require_key("write")
    @blp.arguments(UnsubscribeLinksArgs)
    @blp.response(201, UnsubscribeLinksSchema)
    @blp.alt_response(415, response="UNSUPPORTED_MEDIA_TYPE")
    def post(self, args):
        """Mint a signed one-click unsubscribe link, with its mail headers, per email."""
        return {"links": marketing.unsubscribe_links(g.site, args["purpose"], args["emails"])}, 201


def subject_or_404(site: Site, args: dict) -> Subject:
    subject, _ = subject_from_args(site, args, create=False)
    if subject is None:
        abort(404, message="No subject matches.")
    return subject


EXPORT_FORMATS = "format=json: the export; format=receipts: one receipt per record; format=csv"


@blp.route("/subjects/export")
class SubjectExport(MethodView):
    @require_key("rights")
    @blp.arguments(ExportArgs, location="query")
    @blp.response(
        200,
        {"oneOf": [SubjectExportSchema, {"type": "array", "items": ConsentReceiptSchema}]},
        description=EXPORT_FORMATS,
    )
    @blp.alt_response(
        200, schema={"type": "string"}, content_type="text/csv", description=EXPORT_FORMATS
    )
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, args):
        """Export everything held about one person: JSON, CSV or consent receipts."""
        site = g.site
        subject = subject_or_404(site, args)
        headers = {"Cache-Control": "no-store"}
        if args["format"] == "receipts":
            receipts = rights.consent_receipts(site, subject, actor(), args.get("reason"))
            return jsonify(receipts), 200, headers
        export = rights.export_subject(site, subject, actor(), args.get("reason"))
        if args["format"] == "csv":
            headers["Content-Disposition"] = (
                f'attachment; filename="subject-{subject.pseudonym}.csv"'
            )
            return Response(rights.export_as_csv(export), mimetype="text/csv", headers=headers)
        return jsonify(export), 200, headers


@blp.route("/subjects/correct")
class SubjectCorrection(MethodView):
    @require_key("rights")
    @blp.arguments(CorrectionArgs)
    @blp.response(200, RightsResultSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    @blp.alt_response(415, response="UNSUPPORTED_MEDIA_TYPE")
    def post(self, args):
        """Change or remove a person's email or user id; the change is recorded."""
        site = g.site
        subject = subject_or_404(site, args)
        record = rights.correct_subject(
            site, subject, args["field"], args["value"], actor(), args.get("reason")
        )
        return {"subject": subject.pseudonym, "erased": False, "record": record}


@blp.route("/subjects/erase")
class SubjectErasure(MethodView):
    @require_key("rights")
    @blp.arguments(ErasureArgs)
    @blp.response(200, RightsResultSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(415, response="UNSUPPORTED_MEDIA_TYPE")
    def post(self, args):
        """Erase a person: forget their identifiers, deny every check, keep the chain."""
        site = g.site
        subject = subject_or_404(site, args)
        record = rights.erase_subject(site, subject, actor(), args.get("reason"))
        return {"subject": subject.pseudonym, "erased": True, "record": record}


@blp.route("/banner-versions/<string:config_hash>")
class BannerVersions(MethodView):
    @blp.response(200, BannerVersionSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
    @require_key("read")
    def get(self, config_hash):
        """Return the banner configuration a record's config_hash names, as it was served."""
        if not archive.is_config_hash(config_hash):
            raise InvalidRequest("config_hash", "Must be 64 lower-case hex digits.")
        version = archive.find_banner_version(g.site, config_hash)
        if version is None:
            abort(404, message="This configuration was never served for this site.")
        return archive.describe_banner_version(version)


@blp.route("/rights-requests")
class ServerRightsRequests(MethodView):
    @blp.arguments(ServerRightsRequestArgs)
    @blp.response(201, RightsRequestReceiptSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(415, response="UNSUPPORTED_MEDIA_TYPE")
    @require_key("rights")
    def post(self, args):
        """Register a logged-in user's request: the site's backend vouches for who they are."""
        subject = subject_or_404(g.site, args)
        return rights_requests.receive_request(
            g.site, args["kind"], "api", actor(), subject=subject, message=args.get("message")
        ), 201
