"""Sites, their purposes and policy versions, and the banner configuration they make."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from consent import validation
from consent.db import db, now_utc
from consent.errors import InvalidRequest
from consent.ledger import latest_material_policy, latest_policy, start_chain
from consent.models import (
    DEFAULT_LIFETIME_DAYS,
    MAX_LIFETIME_DAYS,
    BannerImpression,
    PolicyVersion,
    Purpose,
    Site,
)

SITE_KEY_PATTERN = validation.SITE_KEY
ORIGIN_PATTERN = validation.ORIGIN
#: Google Consent Mode v2 storage and ads signals a purpose can grant.
CONSENT_MODE_SIGNALS = (
    "ad_storage",
    "ad_user_data",
    "ad_personalization",
    "analytics_storage",
    "functionality_storage",
    "personalization_storage",
    "security_storage",
)

#: Banner texts used where a site gives none; sites override them per language.
DEFAULT_TEXTS = {
    "en": {
        "title": "Your privacy choices",
        "description": (
            "We use cookies to keep the site working and, with your permission, to remember "
            "your preferences, understand how the site is used and show relevant ads. "
            "You can change your choice at any time from “Cookie settings”."
        ),
        "accept_all": "Accept all",
        "reject_all": "Reject all",
        "customise": "Customise",
        "save": "Save choices",
        "close": "Close",
        "always_on": "Always on",
        "policy_link": "Privacy policy",
        "settings_title": "Cookie settings",
        "services": "Services",
        "cookies": "Cookies",
        "gpc_notice": ("Your browser sent a Global Privacy Control signal, so advertising is off."),
        "placeholder": "This content from {service} needs your consent to {purpose}.",
        "load": "Allow and load",
    },
}


#: The four cookie purposes every new site starts with.
STANDARD_PURPOSES = [
    {
        "key": "necessary",
        "kind": "cookie",
        "is_required": True,
        "translations": {
            "en": {
                "title": "Strictly necessary",
                "description": "Keeps you signed in and the site secure. Always on.",
            }
        },
        "consent_mode": ["security_storage"],
    },
    {
        "key": "preferences",
        "kind": "cookie",
        "is_required": False,
        "translations": {
            "en": {
                "title": "Preferences",
                "description": "Remembers your language and display choices.",
            }
        },
        "consent_mode": ["functionality_storage", "personalization_storage"],
    },
    {
        "key": "analytics",
        "kind": "cookie",
        "is_required": False,
        "translations": {
            "en": {
                "title": "Analytics",
                "description": "Helps us understand how the site is used, to improve it.",
            }
        },
        "consent_mode": ["analytics_storage"],
    },
    {
        "key": "marketing",
        "kind": "cookie",
        "is_required": False,
        "translations": {
            "en": {
                "title": "Marketing",
                "description": "Lets partners show you ads that match your interests.",
            }
        },
        "consent_mode": ["ad_storage", "ad_user_data", "ad_personalization"],
    },
]


def is_site_key(value: str) -> bool:
    """Whether a site could have this key (so a URL with any other is not worth a query)."""
    return validation.is_site_key(value)


def get_site_by_key(site_key: str) -> Site | None:
    if not is_site_key(site_key):
        return None  # PostgreSQL cannot even compare a NUL or a lone surrogate
    return db.session.scalars(select(Site).where(Site.key == site_key)).first()


def validate_site_settings(
    *,
    key: str | None = None,
    name: str | None = None,
    origins: list[str] | None = None,
    languages: list[str] | None = None,
    lifetime_days: int | None = None,
    retention_days: int | None = None,
    texts: dict | None = None,
) -> None:
    """Refuse settings no site may have, naming the field."""
    if key is not None:
        validation.validate_site_key(key, "key")
    if name is not None:
        validation.validate_length(
            name.strip(), "name", minimum=1, maximum=validation.MAX_NAME_LENGTH
        )
    for origin in origins or []:
        validation.validate_origin(origin, "origins")
    if languages is not None:
        if not languages:
            raise InvalidRequest("languages", "Give at least one language code, like en.")
        for language in languages:
            validation.validate_language_tag(language, "languages")
    for language, overrides in (texts or {}).items():
        validation.validate_language_tag(language, "texts")
        for text in overrides.values():
            validation.validate_length(text, "texts", maximum=validation.MAX_TEXT_LENGTH)
    if lifetime_days is not None and not 1 <= lifetime_days <= MAX_LIFETIME_DAYS:
        raise InvalidRequest(
            "lifetime_days", f"A choice may stand 1 to {MAX_LIFETIME_DAYS} days (13 months)."
        )
    if lifetime_days is not None and retention_days is not None and retention_days < lifetime_days:
        raise InvalidRequest(
            "retention_days", "Records must be kept at least as long as a choice stands."
        )


def create_site(
    key: str,
    name: str,
    *,
    origins: list[str] | None = None,
    lifetime_days: int = DEFAULT_LIFETIME_DAYS,
    retention_days: int = 3 * 365,
    languages: list[str] | None = None,
    texts: dict[str, dict[str, str]] | None = None,
) -> Site:
    """Create a site with an empty chain; refuse a key that is taken."""
    validate_site_settings(
        key=key,
        name=name,
        origins=origins,
        languages=languages,
        lifetime_days=lifetime_days,
        retention_days=retention_days,
        texts=texts,
    )
    if get_site_by_key(key) is not None:
        raise InvalidRequest("key", f"A site with key {key!r} exists already.")
    languages = languages or ["en"]
    site = Site(
        key=key,
        name=name,
        allowed_origins=list(origins or []),
        lifetime_days=lifetime_days,
        retention_days=retention_days,
        languages=languages,
        default_language=languages[0],
        texts=texts or {},
    )
    db.session.add(site)
    db.session.flush()
    start_chain(site)
    db.session.flush()
    return site


def validate_purpose(key: str, fields: dict[str, Any]) -> None:
    """Refuse a purpose key, translation, cookie or service no banner may show."""
    validation.validate_purpose_key(key, "key")
    for language, translation in (fields.get("translations") or {}).items():
        validation.validate_language_tag(language, "translations")
        validation.validate_length(
            translation.get("title", ""), "translations", minimum=1, maximum=200
        )
        validation.validate_length(
            translation.get("description", ""),
            "translations",
            maximum=validation.MAX_TEXT_LENGTH,
        )
    for signal in fields.get("consent_mode") or []:
        if signal not in CONSENT_MODE_SIGNALS:
            raise InvalidRequest("consent_mode", f"{signal!r} is not a Consent Mode signal.")
    for cookie in fields.get("cookies") or []:
        validation.validate_length(cookie.get("name", ""), "cookies", minimum=1, maximum=200)
    services = fields.get("services") or []
    for service in services:
        validation.validate_purpose_key(service.get("key"), "services")
        if service.get("policy_url") is not None:
            validation.validate_web_url(service["policy_url"], "services")
    service_keys = [service["key"] for service in services]
    if len(set(service_keys)) != len(service_keys):
        raise InvalidRequest("services", "Each service key may appear only once.")


def set_purpose(site: Site, key: str, **fields: Any) -> Purpose:
    """Create or update one purpose of a site; refuse values no banner may show."""
    validate_purpose(key, fields)
    purpose = next((p for p in site.purposes if p.key == key), None)
    if purpose is None:
        purpose = Purpose(key=key, position=len(site.purposes))
        site.purposes.append(purpose)
    for name, value in fields.items():
        setattr(purpose, name, value)
    db.session.flush()
    return purpose


def publish_policy(
    site: Site,
    version: str,
    *,
    url: str | None = None,
    is_material: bool = False,
    published_at: datetime | None = None,
) -> PolicyVersion:
    """Publish a new policy version; a material one makes earlier decisions stale."""
    validation.validate_length(version, "version", minimum=1, maximum=64)
    if url is not None:
        validation.validate_web_url(url, "url")
    if any(policy.version == version for policy in site.policy_versions):
        raise InvalidRequest("version", f"Policy version {version!r} exists already.")
    policy = PolicyVersion(
        site=site,
        version=version,
        url=url,
        is_material=is_material,
        published_at=published_at or now_utc(),
    )
    db.session.add(policy)
    db.session.flush()
    return policy


def _texts_for(site: Site) -> dict[str, dict[str, str]]:
    """Merge the site's texts over the defaults, per language."""
    fallback = DEFAULT_TEXTS["en"]
    return {
        language: {**fallback, **DEFAULT_TEXTS.get(language, {}), **site.texts.get(language, {})}
        for language in site.languages
    }


def _banner_content(site: Site) -> dict[str, Any]:
    """What the banner shows; its hash changes when any of it changes."""
    return {
        "languages": site.languages,
        "default_language": site.default_language,
        "texts": _texts_for(site),
        "purposes": [
            {
                "key": purpose.key,
                "kind": purpose.kind,
                "is_required": purpose.is_required,
                "translations": purpose.translations,
                "consent_mode": purpose.consent_mode,
                "cookies": purpose.cookies,
                "services": purpose.services,
            }
            for purpose in site.purposes
            if purpose.kind == "cookie"
        ],
    }


def banner_config(site: Site) -> dict[str, Any]:
    """The configuration the widget needs, with the hash of what it shows."""
    content = _banner_content(site)
    serialised = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    policy = latest_policy(site)
    material = latest_material_policy(site)
    return {
        "site": {"key": site.key, "name": site.name},
        "config_hash": hashlib.sha256(serialised.encode()).hexdigest(),
        "policy": (
            {
                "version": policy.version,
                "url": policy.url,
                "published_at": policy.published_at.isoformat(),
                "is_material": policy.is_material,
            }
            if policy
            else None
        ),
        "material_version": material.version if material else None,
        "lifetime_days": site.lifetime_days,
        **content,
    }


def count_banner_shown(site: Site) -> None:
    """Add one to today's count of first-layer displays; no identifier is stored."""
    dialect = postgresql if db.session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(BannerImpression).values(
        site_id=site.id, day=now_utc().date(), count=1
    )
    db.session.execute(
        statement.on_conflict_do_update(
            index_elements=["site_id", "day"],
            set_={"count": BannerImpression.count + 1},
        )
    )
