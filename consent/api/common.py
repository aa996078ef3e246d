"""Helpers the API blueprints share."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from flask import Response, jsonify, request
from flask_compress import Compress
from flask_smorest import Blueprint, abort
from webargs.flaskparser import FlaskParser

from consent import metrics, regions
from consent.check import VisitorCheck
from consent.ledger import Answer
from consent.schemas import RecordResultSchema
from consent.site_facts import SiteFacts
from consent.tokens import make_visitor_token

#: Schemas are costly to build and safe to share: one instance serves every request.
RECORD_RESULT = RecordResultSchema()

#: Brotli or gzip, for the answers that are worth it (``@compress.compressed()``) only:
#: most answers are a few hundred bytes, and the check's fast path must match Flask's.
compress = Compress()


class JsonParser(FlaskParser):
    """webargs' parser, with a 400 (not a 500) for JSON it cannot turn into values."""

    def load_json(self, req, schema):
        try:
            return super().load_json(req, schema)
        except RecursionError:
            abort(400, messages={"json": ["The JSON body is nested too deeply."]})
        except ValueError:  # a number with more digits than Python converts, for one
            abort(400, messages={"json": ["The JSON body holds a value that cannot be read."]})


class ApiBlueprint(Blueprint):
    """A flask-smorest blueprint that reads request bodies with :class:`JsonParser`."""

    ARGUMENTS_PARSER = JsonParser()


#: Answer headers a page on an allowed origin may read.
CORS_EXPOSED_HEADERS = "ETag, Idempotent-Replayed, Retry-After"


def is_allowed_origin(allowed_origins: list[str], origin: str, host_url: str | None = None) -> bool:
    """The site's listed origins, and the service's own pages (the demo).

    ``host_url`` is the request's (``request.host_url`` unless given).
    """
    own_origin = (host_url or request.host_url).rstrip("/")
    return origin in allowed_origins or origin == own_origin


def truncated_ip(address: str | None) -> str | None:
    """An address with the host part zeroed (/24 IPv4, /48 IPv6); None if not one."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)


def check_answer(
    found: VisitorCheck, args: dict[str, str], origin: str | None, host_url: str
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The public check's answer, body and headers, whichever path gives it.

    The fast path (``consent.api.fastpath``) and Flask's view both answer through
    this, so the two can never differ in what they say or which origins may read it.
    """
    metrics.count_check(found.verdict.reason)
    body = {  # as ``CheckSchema`` dumps it (which costs a tenth of a check)
        name: value.isoformat() if isinstance(value, datetime) else value
        for name, value in found.verdict.body(args["purpose"], args.get("service")).items()
    }
    return body, [
        ("Cache-Control", "no-store"),
        *cors_headers(found.allowed_origins, origin, host_url),
    ]


def cors_headers(
    allowed_origins: Sequence[str], origin: str | None, host_url: str
) -> list[tuple[str, str]]:
    """What lets a page on an allowed origin read an answer (none without an Origin)."""
    if not origin:
        return []
    if not is_allowed_origin(allowed_origins, origin, host_url):
        return [("Vary", "Origin")]
    return [
        ("Vary", "Origin"),
        ("Access-Control-Allow-Origin", origin),
        ("Access-Control-Expose-Headers", CORS_EXPOSED_HEADERS),
    ]


def record_answer(site_key: str) -> Answer:
    """How a record is answered (and kept for retries): a visitor's with its token,
    signed before the chain lock is taken (no need to hold it for that)."""

    def answer(visitor_id: str | None):
        visitor = {}
        if visitor_id is not None:
            visitor = {
                "visitor_token": make_visitor_token(site_key, visitor_id),
                "visitor_id": visitor_id,
            }
        return lambda record: RECORD_RESULT.dump({**visitor, "record": record})

    return answer


def recording_options(
    site: SiteFacts,
    args: dict[str, Any],
    header: Callable[[str], str | None],
    remote_addr: str | None,
    config: Mapping[str, Any],
) -> dict[str, Any]:
    """How a visitor's submission is recorded, from its request: the same whichever path
    answers it (the view, or ``consent.api.fastpath``). 422 for a false GPC opt-out."""
    is_gpc = regions.sends_gpc(header)
    regions.refuse_false_gpc_record(args["source"], args["decisions"], is_gpc)
    region = regions.request_region(header, config)
    return {
        "answer": record_answer(site.key),
        "idempotency_key": header("Idempotency-Key"),
        "is_gpc": is_gpc,
        "ip_truncated": truncated_ip(remote_addr),
        "region": region,
        "mode": regions.mode_for(site.region_rules, region),
    }


def created(body: dict, *, is_replay: bool = False) -> Response:
    """A 201 with an already serialised record answer (first time, or a replay of it)."""
    response = jsonify(body)
    response.status_code = 201
    if is_replay:
        response.headers["Idempotent-Replayed"] = "true"
    return response
