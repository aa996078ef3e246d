"""Idempotency: a client's retry with the same ``Idempotency-Key`` gets the first answer.

Only a digest of the key is stored, beside a digest of the request it came with: the
same key with another request is refused, so a guessed key replays nobody's answer.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import select

from consent.db import db
from consent.errors import InvalidRequest
from consent.models import IdempotentRequest, Site

#: Shorter keys could be guessed, and a guessed key would replay someone else's answer.
MIN_KEY_LENGTH = 16


def idempotency_key_digest(idempotency_key: str) -> str:
    """Return what is stored of an ``Idempotency-Key``: its SHA-256, never the key."""
    return hashlib.sha256(idempotency_key.encode()).hexdigest()


def find_earlier_answer(
    site: Site, idempotency_key: str | None, request: Any
) -> tuple[str | None, dict[str, Any] | None]:
    """The request's digest and the answer given to an earlier request with this key.

    A concurrent retry may not see the first answer yet: ``remember_answer``'s unique
    key then decides which one stays. The same key with a different request is refused.
    """
    request_digest = checked_request_digest(idempotency_key, request)
    if request_digest is None:
        return None, None
    earlier = db.session.scalars(
        select(IdempotentRequest).where(
            IdempotentRequest.site_id == site.id,
            IdempotentRequest.key == idempotency_key_digest(idempotency_key),
        )
    ).first()
    if earlier is None:
        return request_digest, None
    if earlier.request_digest != request_digest:
        raise different_submission()
    return request_digest, earlier.response


def different_submission() -> InvalidRequest:
    """The refusal of a key sent again with another submission than its first."""
    return InvalidRequest("Idempotency-Key", "This key was used for a different submission.")


def checked_request_digest(idempotency_key: str | None, request: Any) -> str | None:
    """The digest of a request sent with an ``Idempotency-Key`` (refused if too short)."""
    if idempotency_key is None:
        return None
    if not MIN_KEY_LENGTH <= len(idempotency_key) <= 200 or not idempotency_key.isprintable():
        raise InvalidRequest(
            "Idempotency-Key",
            f"Must be {MIN_KEY_LENGTH} to 200 printable characters: send a random one "
            "(a UUID) per submission.",
        )
    return hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()


def remember_answer(
    site: Site, idempotency_key: str | None, request_digest: str | None, response: dict
) -> None:
    """Keep the answer to a request sent with an ``Idempotency-Key`` for its retries."""
    if idempotency_key is None:
        return
    db.session.add(
        IdempotentRequest(
            site_id=site.id,
            key=idempotency_key_digest(idempotency_key),
            request_digest=request_digest,
            response=response,
        )
    )
    db.session.flush()
