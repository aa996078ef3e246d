"""Signed tokens the browser or an email hands back, one serializer per purpose."""

from __future__ import annotations

import functools
from typing import NamedTuple

from flask import current_app
from flask_smorest import abort
from itsdangerous import BadSignature, URLSafeSerializer

VISITOR_SALT = "consent.visitor-token"


@functools.lru_cache(maxsize=8)
def visitor_serializer(secret_key: str) -> URLSafeSerializer:
    """One serializer per secret: building one costs more than checking a token."""
    return URLSafeSerializer(secret_key, salt=VISITOR_SALT)


def _visitor_serializer() -> URLSafeSerializer:
    return visitor_serializer(current_app.config["SECRET_KEY"])


class VisitorToken(NamedTuple):
    """What a visitor token we signed says: its site's key and the visitor id."""

    site: str | None
    visitor: str


def open_visitor_token(serializer: URLSafeSerializer, token: str) -> VisitorToken | None:
    """The token's site and visitor if we signed it, else None."""
    try:
        return _verified(serializer, token)
    except BadSignature:
        return None


@functools.lru_cache(maxsize=4096)
def _verified(serializer: URLSafeSerializer, token: str) -> VisitorToken:
    """A token checked once per process: a page asks the check for each purpose, with the
    same token, page after page. Only tokens that verify are kept (an exception is not
    cached), so forged ones cannot fill the cache; the serializer is part of the key, so
    a new secret checks every token again."""
    payload = serializer.loads(token)
    if not isinstance(payload, dict) or not isinstance(payload.get("visitor"), str):
        raise BadSignature("not a visitor token")
    site = payload.get("site")
    return VisitorToken(site if isinstance(site, str) else None, payload["visitor"])


def make_visitor_token(site_key: str, visitor_id: str) -> str:
    """Sign a visitor id for one site."""
    return _visitor_serializer().dumps({"site": site_key, "visitor": visitor_id})


def read_visitor_token(token: str, site_key: str, field: str = "visitor_token") -> str:
    """Return the visitor id in ``token``; 401 if forged, 403 if made for another site.

    ``field`` names where the token came from in the error (a body field or a header).
    """
    payload = open_visitor_token(_visitor_serializer(), token)
    if payload is None:
        message = "The visitor token is invalid."
        abort(401, message=message, errors={field: [message]})
    if payload.site != site_key:
        message = "The visitor token belongs to another site."
        abort(403, message=message, errors={field: [message]})
    return payload.visitor


UNSUBSCRIBE_SALT = "consent.unsubscribe-link"


def _unsubscribe_serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt=UNSUBSCRIBE_SALT)


def make_unsubscribe_token(site_key: str, pseudonym: str, purpose: str) -> str:
    """Sign an opt-out for one subject and purpose; it never expires, on purpose."""
    return _unsubscribe_serializer().dumps({"site": site_key, "subject": pseudonym, "p": purpose})


def read_unsubscribe_token(token: str) -> tuple[str, str, str] | None:
    """Return (site key, pseudonym, purpose) from a link, or None if it is not ours."""
    try:
        payload = _unsubscribe_serializer().loads(token)
    except BadSignature:
        return None
    if not isinstance(payload, dict) or not all(
        isinstance(payload.get(name), str) for name in ("site", "subject", "p")
    ):
        return None
    return payload["site"], payload["subject"], payload["p"]
