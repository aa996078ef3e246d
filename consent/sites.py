"""Sites, their purposes and policy versions, and the banner configuration they make."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from consent import webhooks
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

# \Z, not $: "$" also matches before a final newline.
SITE_KEY_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{1,63}\Z")
ORIGIN_PATTERN = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?\Z")

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
    return SITE_KEY_PATTERN.match(value) is not None


def get_site_by_key(site_key: str) -> Site | None:
    if not is_site_key(site_key):
        return None  # PostgreSQL cannot even compare a NUL or a lone surrogate
    return db.session.scalars(select(Site).where(Site.key == site_key)).first()


def validate_site_settings(
    *,
    key: str | None = None,
    origins: list[str] | None = None,
    lifetime_days: int | None = None,
    retention_days: int | None = None,
) -> None:
    """Refuse settings no site may have, naming the field."""
    if key is not None and not is_site_key(key):
        raise InvalidRequest("key", "Use 2-64 lower-case letters, digits, '-' or '_'.")
    for origin in origins or []:
        if not ORIGIN_PATTERN.match(origin):
            raise InvalidRequest("origins", f"{origin!r} is not an origin like https://example.com")
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
        key=key, origins=origins, lifetime_days=lifetime_days, retention_days=retention_days
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


def set_purpose(site: Site, key: str, **fields: Any) -> Purpose:
    """Create or update one purpose of a site."""
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
    webhooks.emit_event(
        site,
        "policy.published",
        {
            "version": policy.version,
            "url": policy.url,
            "is_material": policy.is_material,
            "published_at": policy.published_at.isoformat(),
        },
    )
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
