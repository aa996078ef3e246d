"""Public API called by the widget from the site's pages (CORS per site)."""

from __future__ import annotations

import hashlib
import json

from flask import Response, current_app, g, jsonify, request
from flask.views import MethodView
from flask_smorest import abort
from sqlalchemy import select

from consent import metrics, regions, rights_requests
from consent.api.common import (
    ApiBlueprint,
    check_answer,
    compress,
    created,
    is_allowed_origin,
    recording_options,
)
from consent.api.fastpath import FAILED_AFTER_SUBMIT
from consent.archive import archive_banner_version, require_served
from consent.check import check_visitor, describe_state
from consent.db import db, mark_session_reads_only, once_more_if_disconnected
from consent.ledger import record_submission
from consent.models import ConsentRecord, Site, Subject
from consent.schemas import (
    BannerConfigArgs,
    BannerConfigSchema,
    CheckArgs,
    CheckSchema,
    PublicRightsRequestArgs,
    RecordArgs,
    RecordResultSchema,
    RightsRequestReceiptSchema,
    VisitorDataSchema,
)
from consent.site_facts import site_facts
from consent.sites import (
    banner_config,
    config_in_languages,
    config_in_region,
    count_banner_shown,
    count_refused_origin,
    get_site_by_key,
    is_site_key,
)
from consent.tokens import read_visitor_token
from consent.visitors import find_visitor
from consent.widget import load_asset

blp = ApiBlueprint(
    "public",
    __name__,
    url_prefix="/v1/sites/<string:site_key>",
    description="Called by the banner in the visitor's browser.",
)

TOKEN_HEADER = "X-Consent-Token"


def load_site(site_key: str, *, is_banner: bool = False, loader=get_site_by_key) -> Site:
    """The site named in the URL (404), refusing pages on origins it does not allow.

    Writes are refused from such origins, and so is the banner's configuration
    (``is_banner``): a banner there could only collect choices that are never recorded.
    Each refusal is counted per origin for the site's admin page. ``loader``: how the
    site is read (``site_facts``: the process's copy of what recording needs).
    """
    site = loader(site_key)
    if site is None:
        abort(404, message=f"No site with key {site_key!r}.")
    g.site = site
    g.allowed_origins = site.allowed_origins
    origin = request.headers.get("Origin")
    if (
        origin is not None
        and (request.method != "GET" or is_banner)
        and not is_allowed_origin(site.allowed_origins, origin)
    ):
        count_refused_origin(site, origin)
        metrics.count_refused_origin()
        db.session.commit()  # the count stands although the request fails
        abort(
            403,
            message=f"Pages on {origin} may not use site {site.key}: add {origin} "
            f"to the allowed origins of site {site.key}.",
        )
    return site


def current_subject(site: Site, *, required: bool) -> Subject | None:
    """The subject behind the request's visitor token, if any (401/403 on a bad token)."""
    token = request.headers.get(TOKEN_HEADER)
    if not token:
        if required:
            abort(401, message=f"Send the visitor token in the {TOKEN_HEADER} header.")
        return None
    visitor = find_visitor(site, read_visitor_token(token, site.key, TOKEN_HEADER))
    return visitor.subject if visitor else None


@blp.route("/config")
class BannerConfig(MethodView):
    @blp.response(200, BannerConfigSchema)
    @blp.alt_response(304, response="NOT_MODIFIED")
    @blp.alt_response(404, response="NOT_FOUND")
    @compress.compressed()
    @blp.arguments(BannerConfigArgs, location="query")
    def get(self, args, site_key):
        """Return what the banner shows, cacheable with an ETag.

        ``lang`` (the visitor's languages, best first) trims the texts to the one the
        banner will speak and the site's default.
        """
        site = load_site(site_key, is_banner=True)
        config = banner_config(site, max_age=current_app.config["CONFIG_MAX_AGE"])
        archive_banner_version(site, config, load_asset("consent.js"))  # all languages
        config = config_in_region(site, config, visitor_region())
        if "lang" in args:
            config = config_in_languages(site, config, args["lang"].split(","))
        body = json.dumps(config, sort_keys=True).encode()
        etag = hashlib.sha256(body).hexdigest()[:32]
        # Weak: the same configuration whatever the encoding (gzip, brotli or none).
        headers = {"ETag": f'W/"{etag}"', "Cache-Control": _config_cache_control()}
        if region_headers := regions.region_headers(current_app.config):
            headers["Vary"] = ", ".join(region_headers)  # one copy per region in caches
        if request.if_none_match.contains_weak(etag):
            return Response(status=304, headers=headers)
        return config, 200, headers


def _config_cache_control() -> str:
    return f"public, max-age={current_app.config['CONFIG_MAX_AGE']}"


def visitor_region() -> str | None:
    """The visitor's region from the trusted proxy's headers, if configured and known."""
    return regions.request_region(request.headers.get, current_app.config)


def sends_gpc() -> bool:
    """Whether the browser sends Global Privacy Control (``Sec-GPC: 1``)."""
    return regions.sends_gpc(request.headers.get)


@blp.route("/records")
class Records(MethodView):
    @blp.arguments(RecordArgs)
    @blp.response(201, RecordResultSchema)
    @blp.alt_response(401, response="UNAUTHORIZED")
    @blp.alt_response(403, response="FORBIDDEN")
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(415, response="UNSUPPORTED_MEDIA_TYPE")
    @blp.doc(
        parameters=[
            {"in": "header", "name": TOKEN_HEADER, "schema": {"type": "string"}},
            {"in": "header", "name": "Idempotency-Key", "schema": {"type": "string"}},
        ]
    )
    def post(self, args, site_key):
        """Record one submission of the visitor's decisions."""
        if (failed := request.environ.get(FAILED_AFTER_SUBMIT)) is not None:
            raise failed  # after the fast path submitted it: answered as any failure here
        mark_session_reads_only()  # the record is appended on a connection of its own
        site = load_site(site_key, loader=site_facts)
        token = request.headers.get(TOKEN_HEADER)
        visitor_id = read_visitor_token(token, site.key, TOKEN_HEADER) if token else None
        config_hash = args.get("config_hash")
        is_new_hash = config_hash is not None and config_hash not in site.served
        if is_new_hash:
            require_served(db.session.get(Site, site.id), config_hash, load_asset("consent.js"))
        options = recording_options(
            site, args, request.headers.get, request.remote_addr, current_app.config
        )
        result, is_replay = record_submission(site, visitor_id, args, **options)
        if is_new_hash:  # archived, and committed: trusted as long as this copy is used
            site.served.add(config_hash)
        # Already dumped: it is the stored answer on a replay, so send it as it is.
        return created(result, is_replay=is_replay)


@blp.route("/me")
class VisitorData(MethodView):
    @blp.response(200, VisitorDataSchema)
    @blp.alt_response(401, response="UNAUTHORIZED")
    @blp.alt_response(403, response="FORBIDDEN")
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.doc(
        parameters=[
            {"in": "header", "name": TOKEN_HEADER, "required": True, "schema": {"type": "string"}}
        ]
    )
    def get(self, site_key):
        """Return the visitor's own current state and history."""
        site = load_site(site_key)
        token = request.headers.get(TOKEN_HEADER)
        if not token:
            abort(401, message=f"Send the visitor token in the {TOKEN_HEADER} header.")
        visitor_id = read_visitor_token(token, site.key, TOKEN_HEADER)
        subject = current_subject(site, required=True)
        if subject is None:
            return {"visitor_id": visitor_id, "erased": False, "state": {}, "history": []}
        history = db.session.scalars(
            select(ConsentRecord)
            .where(
                ConsentRecord.site_id == site.id,
                ConsentRecord.subject_pseudonym == subject.pseudonym,
            )
            .order_by(ConsentRecord.sequence.desc())
            .limit(current_app.config["HISTORY_LIMIT"])
        ).all()
        return (
            {
                "visitor_id": visitor_id,
                "erased": subject.erased_at is not None,
                "state": describe_state(site, subject, region=visitor_region(), is_gpc=sends_gpc()),
                "history": history,
            },
            200,
            {"Cache-Control": "no-store"},
        )


@blp.route("/check")
class Check(MethodView):
    @blp.arguments(CheckArgs, location="query")
    @blp.response(200, CheckSchema)
    @blp.alt_response(401, response="UNAUTHORIZED")
    @blp.alt_response(403, response="FORBIDDEN")
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    @blp.doc(parameters=[{"in": "header", "name": TOKEN_HEADER, "schema": {"type": "string"}}])
    def get(self, args, site_key):
        """Answer whether a purpose (or one service in it) is allowed for this visitor."""
        token = request.headers.get(TOKEN_HEADER)
        visitor_id = read_visitor_token(token, site_key, TOKEN_HEADER) if token else None
        found = None
        if is_site_key(site_key):
            region, is_gpc = visitor_region(), sends_gpc()
            found = once_more_if_disconnected(
                lambda: check_visitor(
                    site_key,
                    visitor_id,
                    args["purpose"],
                    args.get("service"),
                    region=region,
                    is_gpc=is_gpc,
                )
            )
        if found is None:
            abort(404, message=f"No site with key {site_key!r}.")
        g.allowed_origins = found.allowed_origins
        body, headers = check_answer(found, args, request.headers.get("Origin"), request.host_url)
        response = jsonify(body)  # already dumped, as the fast path sends it
        response.headers.extend(headers)
        return response


@blp.route("/shown")
class Shown(MethodView):
    @blp.response(204)
    @blp.alt_response(403, response="FORBIDDEN")
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(415, response="UNSUPPORTED_MEDIA_TYPE")
    def post(self, site_key):
        """Count one display of the banner's first layer, with no identifier at all."""
        site = load_site(site_key)
        count_banner_shown(site)
        return "", 204


@blp.route("/rights-requests")
class RightsRequests(MethodView):
    @blp.arguments(PublicRightsRequestArgs)
    @blp.response(202, RightsRequestReceiptSchema)
    @blp.alt_response(403, response="FORBIDDEN")
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(415, response="UNSUPPORTED_MEDIA_TYPE")
    def post(self, args, site_key):
        """Receive a rights request; the address given gets a link to confirm it."""
        site = load_site(site_key)
        return rights_requests.receive_request(
            site,
            args["kind"],
            "web",
            "person",
            email=args["email"],
            message=args.get("message"),
        )
