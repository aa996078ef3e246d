"""Identifying data at rest: AES-256-GCM encryption and keyed hashes for lookup.

Emails and the site's user ids are stored encrypted (never in the clear) with an
HMAC-SHA256 digest beside them, so exact lookups work without decrypting every row.
Both keys are derived from ``DATA_KEY`` in the configuration, never from the database.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from flask import current_app

from consent.errors import InvalidRequest

MAX_EMAIL_LENGTH = 254
MAX_USER_ID_LENGTH = 200


def _keys() -> tuple[bytes, bytes]:
    master = base64.b64decode(current_app.config["DATA_KEY"])
    if len(master) != 32:
        raise RuntimeError("CONSENT_DATA_KEY must be base64 of exactly 32 bytes")
    lookup = hmac.new(master, b"consent lookup key", hashlib.sha256).digest()
    encryption = hmac.new(master, b"consent encryption key", hashlib.sha256).digest()
    return lookup, encryption


def normalise_email(email: str, field: str = "email") -> str:
    """Return the email trimmed and lower-cased, or refuse one that is not an address."""
    value = email.strip().lower()
    local, at, domain = value.rpartition("@")
    if (
        not at
        or not local
        or "." not in domain
        or domain.startswith(".")
        or domain.endswith(".")
        or len(value) > MAX_EMAIL_LENGTH
        or any(ch.isspace() or ord(ch) < 32 for ch in value)
    ):
        raise InvalidRequest(field, "Not a valid email address.")
    return value


def normalise_user_id(user_id: str, field: str = "user_id") -> str:
    """Return the site's user id as given, refusing empty or oversized ones."""
    value = user_id.strip()
    if not value or len(value) > MAX_USER_ID_LENGTH or "\x00" in value:
        raise InvalidRequest(field, f"Must be 1 to {MAX_USER_ID_LENGTH} characters.")
    return value


def digest(kind: str, site_id: int, value: str) -> str:
    """Keyed hash of an identifier, scoped to its kind and site."""
    lookup, _ = _keys()
    message = f"{kind}\x00{site_id}\x00{value}".encode()
    return hmac.new(lookup, message, hashlib.sha256).hexdigest()


def encrypt(value: str) -> bytes:
    """Encrypt with AES-256-GCM; the 12-byte nonce is stored in front."""
    _, key = _keys()
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, value.encode(), None)


def decrypt(blob: bytes) -> str:
    """Decrypt a value made by :func:`encrypt`."""
    _, key = _keys()
    return AESGCM(key).decrypt(blob[:12], blob[12:], None).decode()
