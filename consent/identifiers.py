"""Identifying data at rest: AES-256-GCM encryption and keyed hashes for lookup.

Emails and the site's user ids are stored encrypted (never in the clear) with an
HMAC-SHA256 digest beside them, so exact lookups work without decrypting every row.
The keys come from the configuration, never from the database: ``DATA_KEY`` is the
current key, ``OLD_DATA_KEYS`` the ones it replaced. Each ciphertext names the key
that made it, so rotation (``consent rotate-data-key``) can re-encrypt row by row.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import unicodedata
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from flask import current_app

from consent.errors import InvalidRequest

MAX_EMAIL_LENGTH = 254
MAX_USER_ID_LENGTH = 200
#: First byte of every ciphertext: the layout below, in case it ever changes.
FORMAT_VERSION = b"\x01"


@dataclass(frozen=True)
class DataKey:
    """One configured data key and the two keys derived from it."""

    key_id: bytes
    lookup: bytes
    encryption: bytes

    @classmethod
    def from_config(cls, encoded: str) -> DataKey:
        master = base64.b64decode(encoded)
        if len(master) != 32:
            raise RuntimeError("A data key must be base64 of exactly 32 bytes")
        return cls(
            key_id=hashlib.sha256(master).digest()[:8],
            lookup=hmac.new(master, b"consent lookup key", hashlib.sha256).digest(),
            encryption=hmac.new(master, b"consent encryption key", hashlib.sha256).digest(),
        )


def keyring() -> list[DataKey]:
    """The current data key first, then the ones it replaced."""
    config = current_app.config
    return [DataKey.from_config(config["DATA_KEY"])] + [
        DataKey.from_config(old) for old in config.get("OLD_DATA_KEYS") or []
    ]


def is_storable_text(value: str) -> bool:
    """Whether both databases can store and compare ``value``: no NUL, valid UTF-8."""
    if "\x00" in value:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:  # a lone surrogate, as JSON's \ud800 escape can carry
        return False
    return True


#: Characters no address we accept holds, besides spaces and invisible ones.
NOT_IN_EMAIL = '<>,;"()[]\\'
#: The same for an all-ASCII address (most of a mailing list), in one regex: spaces and
#: controls are exactly what ``isspace`` and category C catch below 128.
ASCII_NOT_IN_EMAIL = re.compile(r'[\x00-\x20\x7f<>,;"()\[\]\\]')


def normalise_email(email: str, field: str = "email") -> str:
    """Return the email trimmed and lower-cased, or refuse one that is not an address."""
    value = email.strip().lower()
    local, at, domain = value.rpartition("@")
    if (
        not at
        or not local
        or "@" in local
        or "." not in domain
        or domain.startswith(".")
        or domain.endswith(".")
        or ".." in domain
        or len(value) > MAX_EMAIL_LENGTH
        or not is_storable_text(value)
        # Invisible characters (controls, bidi overrides, zero-width spaces) would make a
        # second address that reads as the first, and escape the first one's opt-out.
        or (
            ASCII_NOT_IN_EMAIL.search(value)
            if value.isascii()
            else any(
                ch.isspace() or unicodedata.category(ch).startswith("C") or ch in NOT_IN_EMAIL
                for ch in value
            )
        )
    ):
        raise InvalidRequest(field, "Not a valid email address.")
    return value


def normalise_user_id(user_id: str, field: str = "user_id") -> str:
    """Return the site's user id as given, refusing empty or oversized ones."""
    value = user_id.strip()
    if not value or len(value) > MAX_USER_ID_LENGTH or not is_storable_text(value):
        raise InvalidRequest(field, f"Must be 1 to {MAX_USER_ID_LENGTH} characters of text.")
    return value


def digest_with_key(key: DataKey, kind: str, site_id: int, value: str) -> str:
    message = f"{kind}\x00{site_id}\x00{value}".encode()
    return hmac.new(key.lookup, message, hashlib.sha256).hexdigest()


def digest(kind: str, site_id: int, value: str) -> str:
    """Keyed hash of an identifier under the current key, scoped to its kind and site."""
    return digest_with_key(keyring()[0], kind, site_id, value)


def lookup_digests(kind: str, site_id: int, value: str) -> list[str]:
    """The identifier's hash under every configured key, current first (for lookups)."""
    return [digest_with_key(key, kind, site_id, value) for key in keyring()]


def encrypt(value: str) -> bytes:
    """Encrypt with AES-256-GCM under the current key; key id and nonce go in front."""
    key = keyring()[0]
    nonce = os.urandom(12)
    return (
        FORMAT_VERSION
        + key.key_id
        + nonce
        + AESGCM(key.encryption).encrypt(nonce, value.encode(), None)
    )


def decrypt(blob: bytes) -> str:
    """Decrypt a value made by :func:`encrypt` with whichever configured key made it."""
    key_id, nonce, ciphertext = blob[1:9], blob[9:21], blob[21:]
    for key in keyring():
        if key.key_id == key_id:
            return AESGCM(key.encryption).decrypt(nonce, ciphertext, None).decode()
    raise RuntimeError(
        "A stored identifier was encrypted with a data key that is not configured; "
        "add it to CONSENT_OLD_DATA_KEYS."
    )


def is_current(blob: bytes) -> bool:
    """Whether a ciphertext was made with the current key."""
    return blob[1:9] == keyring()[0].key_id
