"""The validation rules for what people type: one pattern per kind of value, defined once.

The API schemas, the admin forms, the CLI, the check's fast path and the domain
functions all use these, so a value one of them accepts is accepted by every other.
Patterns end with ``\\Z``, never ``$``: "$" also matches before a final newline, which
would then be stored (``"stats\\n"``).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from consent import identifiers
from consent.errors import InvalidRequest
from consent.identifiers import is_storable_text, normalise_email

#: A site's public key, used in URLs and the embed snippet.
SITE_KEY = re.compile(r"[a-z0-9][a-z0-9_-]{1,63}\Z")
#: A purpose's or a service's key, what page code asks for (``analytics``, ``ga4.ads``).
PURPOSE_KEY = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}\Z")
#: A BCP 47 language tag in its common short form: ``en``, ``pt-BR``, ``zh-Hant-TW``.
LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*\Z")
#: An origin a banner may be embedded on: scheme, host and an optional port, no path.
ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?\Z")
#: The shape of an ISO 3166 code: a country (``FR``) or a subdivision (``US-CA``);
#: ``consent.regions`` checks the code against the ISO lists.
REGION_CODE = re.compile(r"[A-Z]{2}(-[A-Z0-9]{1,3})?\Z")

#: Longest values the tables hold.
MAX_NAME_LENGTH = 200
MAX_URL_LENGTH = 2000
MAX_EMAIL_LENGTH = identifiers.MAX_EMAIL_LENGTH
MAX_TEXT_LENGTH = 2000

MESSAGES = {
    "site_key": "Use 2-64 lower-case letters, digits, '-' or '_', starting with a letter or digit.",
    "purpose_key": "Use 1-64 lower-case letters, digits, '-', '_' or '.', "
    "starting with a letter or digit.",
    "language": "is not a language code like en or pt-BR.",
    "origin": "is not an origin like https://example.com (no path, no trailing slash).",
    "url": "Use a full web address starting with https:// or http://.",
    "unstorable": "Remove the NUL or unpaired surrogate characters.",
    "region": "is not an ISO 3166 country or subdivision code like FR or US-CA.",
}


class InvalidValue(InvalidRequest, ValueError):
    """A value breaks a rule; ``field`` names what was wrong, ``message`` says how.

    An ``InvalidRequest``, so the API answers it 422 naming the field and the admin shows
    it beside that field.
    """


def _full(pattern: re.Pattern, value) -> bool:
    return isinstance(value, str) and pattern.match(value) is not None


def is_site_key(value) -> bool:
    return _full(SITE_KEY, value)


def is_purpose_key(value) -> bool:
    return _full(PURPOSE_KEY, value)


def is_language_tag(value) -> bool:
    return _full(LANGUAGE_TAG, value)


def is_origin(value) -> bool:
    return _full(ORIGIN, value)


def is_email(value) -> bool:
    """Whether a value is an email address (the rule of ``identifiers.normalise_email``)."""
    try:
        validate_email(value)
    except InvalidRequest:
        return False
    return True


def is_web_url(value) -> bool:
    """Whether a value is an absolute http(s) URL with a host (never javascript: or data:)."""
    if not isinstance(value, str) or not value or len(value) > MAX_URL_LENGTH:
        return False
    if any(character.isspace() or ord(character) < 32 for character in value):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def validate_site_key(value, field: str = "key") -> str:
    """Return the site key, or raise ``InvalidValue`` naming ``field``."""
    if not is_site_key(value):
        raise InvalidValue(field, MESSAGES["site_key"])
    return value


def validate_purpose_key(value, field: str = "key") -> str:
    """Return the purpose (or service) key, or raise ``InvalidValue`` naming ``field``."""
    if not is_purpose_key(value):
        raise InvalidValue(field, MESSAGES["purpose_key"])
    return value


def validate_language_tag(value, field: str = "language") -> str:
    """Return the language tag, or raise ``InvalidValue`` naming ``field``."""
    if not is_language_tag(value):
        raise InvalidValue(field, f"{value!r} {MESSAGES['language']}")
    return value


def validate_origin(value, field: str = "origins") -> str:
    """Return the origin, or raise ``InvalidValue`` naming ``field``."""
    if not is_origin(value):
        raise InvalidValue(field, f"{value!r} {MESSAGES['origin']}")
    return value


def validate_web_url(value, field: str = "url") -> str:
    """Return the http(s) URL, or raise ``InvalidValue`` naming ``field``."""
    if not is_web_url(value):
        raise InvalidValue(field, MESSAGES["url"])
    return value


def validate_email(value, field: str = "email") -> str:
    """Return the email address trimmed and lower-cased, or raise naming ``field``.

    The rule is ``identifiers.normalise_email``, the one every stored address passed
    (invisible and look-alike characters refused), so there is one email rule.
    """
    if not isinstance(value, str):
        raise InvalidValue(field, "Not a valid email address.")
    try:
        return normalise_email(value, field)
    except InvalidRequest as error:
        raise InvalidValue(field, error.message) from None


def validate_length(value, field: str, *, maximum: int, minimum: int = 0) -> str:
    """Return the text if its length is within bounds, or raise ``InvalidValue``."""
    if not isinstance(value, str):
        raise InvalidValue(field, "Must be text.")
    if not is_storable_text(value):
        raise InvalidValue(field, MESSAGES["unstorable"])
    if not minimum <= len(value) <= maximum:
        if minimum:
            raise InvalidValue(field, f"Use {minimum} to {maximum} characters.")
        raise InvalidValue(field, f"Use at most {maximum} characters.")
    return value
