"""Idempotency: a client's retry with the same ``Idempotency-Key`` gets the first answer.

Only a digest of the key is stored, beside a digest of the request it came with: the
same key with another request is refused, so a guessed key replays nobody's answer.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from consent.errors import InvalidRequest

#: Shorter keys could be guessed, and a guessed key would replay someone else's answer.
MIN_KEY_LENGTH = 16


def idempotency_key_digest(idempotency_key: str) -> str:
    """Return what is stored of an ``Idempotency-Key``: its SHA-256, never the key."""
    return hashlib.sha256(idempotency_key.encode()).hexdigest()


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
