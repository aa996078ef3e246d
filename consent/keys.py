"""Server API keys: issued once, stored as a SHA-256 of the secret, scoped, revocable."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import timedelta

from sqlalchemy import select

from consent.db import db, now_utc
from consent.errors import InvalidRequest
from consent.models import API_SCOPES, ApiKey, Site

KEY_PREFIX = "ck_"
#: What issue_key makes: the prefix and 6 random bytes in hex.
PREFIX_PATTERN = re.compile(r"ck_[0-9a-f]{12}")
LAST_USED_PRECISION = timedelta(minutes=1)


def _hash_secret(secret: str) -> str:
    # The secret is 32 random bytes: a plain SHA-256 is enough, no slow KDF is needed
    # for a value that cannot be guessed.
    return hashlib.sha256(secret.encode()).hexdigest()


def issue_key(site: Site, name: str, scopes: list[str]) -> tuple[ApiKey, str]:
    """Create a key and return it with its full secret, which is never shown again."""
    unknown = set(scopes) - set(API_SCOPES)
    if unknown or not scopes:
        raise InvalidRequest("scopes", f"Scopes must be among {', '.join(API_SCOPES)}.")
    prefix = KEY_PREFIX + secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    api_key = ApiKey(
        site_id=site.id,
        name=name,
        prefix=prefix,
        secret_hash=_hash_secret(secret),
        scopes=" ".join(sorted(set(scopes))),
    )
    db.session.add(api_key)
    db.session.flush()
    return api_key, f"{prefix}.{secret}"


def revoke_key(prefix: str) -> ApiKey:
    """Revoke a key by its prefix; revoking twice is harmless."""
    api_key = db.session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).first()
    if api_key is None:
        raise InvalidRequest("prefix", f"No key {prefix!r}.")
    if api_key.revoked_at is None:
        api_key.revoked_at = now_utc()
    db.session.flush()
    return api_key


def authenticate_key(presented: str) -> ApiKey | None:
    """Return the live key matching ``prefix.secret``, or None."""
    prefix, dot, secret = presented.partition(".")
    if not dot or not PREFIX_PATTERN.fullmatch(prefix):
        return None  # not worth a query, and PostgreSQL cannot compare a NUL at all
    api_key = db.session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).first()
    if api_key is None or api_key.revoked_at is not None:
        return None
    if not hmac.compare_digest(api_key.secret_hash, _hash_secret(secret)):
        return None
    now = now_utc()
    # To the minute is enough to see which keys are in use: most calls write nothing.
    if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_PRECISION:
        api_key.last_used_at = now
    return api_key
