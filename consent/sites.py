"""Sites, their purposes and policy versions, and the banner configuration they make."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from consent import regions, validation, webhooks
from consent.chain import start_chain
from consent.db import db, insert_for_dialect, now_utc
from consent.errors import InvalidRequest
from consent.i18n import BANNER_TEXTS, BUILT_IN_LANGUAGES, pick_language, purpose_translations
from consent.links import public_url
from consent.models import (
    DEFAULT_LIFETIME_DAYS,
    MAX_LIFETIME_DAYS,
    MAX_REFUSED_ORIGINS,
    BannerImpression,
    PolicyVersion,
    Purpose,
    RefusedOrigin,
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

#: The built-in banner texts per language (a site's own texts override them).
DEFAULT_TEXTS = BANNER_TEXTS

#: The four cookie purposes every new site starts with.
STANDARD_PURPOSES = [
    {
        "key": "necessary",
        "kind": "cookie",
        "is_required": True,
        "translations": purpose_translations("necessary"),
        "consent_mode": ["security_storage"],
    },
    {
        "key": "preferences",
        "kind": "cookie",
        "is_required": False,
        "translations": purpose_translations("preferences"),
        "consent_mode": ["functionality_storage", "personalization_storage"],
    },
    {
        "key": "analytics",
        "kind": "cookie",
        "is_required": False,
        "translations": purpose_translations("analytics"),
        "consent_mode": ["analytics_storage"],
    },
    {
        "key": "marketing",
        "kind": "cookie",
        "is_required": False,
        "translations": purpose_translations("marketing"),
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
    logo_url: str | None = None,
) -> None:
    """Refuse settings no site may have, naming the field."""
    if logo_url:
        validation.validate_web_url(logo_url, "logo_url")
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
    appearance: dict[str, Any] | None = None,
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
    languages = languages or list(BUILT_IN_LANGUAGES)
    site = Site(
        key=key,
        name=name,
        allowed_origins=list(origins or []),
        lifetime_days=lifetime_days,
        retention_days=retention_days,
        languages=languages,
        default_language=languages[0],
        texts=texts or {},
        appearance=validate_appearance(appearance or {}),
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
    text: bytes | None = None,
) -> PolicyVersion:
    """Publish a new policy version; a material one makes earlier decisions stale.

    ``text`` is the policy as published: its SHA-256 is kept with the version.
    """
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
        text_sha256=hashlib.sha256(text).hexdigest() if text is not None else None,
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


#: Texts only a banner under an opt-out or notice rule shows.
REGION_TEXT_KEYS = ("privacy_choices", "notice", "ok", "do_not_sell")


def _texts_for(site: Site) -> dict[str, dict[str, str]]:
    """Merge the site's texts over the defaults, per language (the region texts only for
    a site with a rule that uses them, so other sites keep their configuration hash)."""
    fallback = DEFAULT_TEXTS["en"]
    unused = () if _has_opt_out_rule(site) else REGION_TEXT_KEYS
    return {
        language: {
            name: text
            for name, text in {
                **fallback,
                **DEFAULT_TEXTS.get(language, {}),
                **site.texts.get(language, {}),
            }.items()
            if name not in unused
        }
        for language in site.languages
    }


def _has_opt_out_rule(site: Site) -> bool:
    return any(rule["mode"] != regions.OPT_IN for rule in site.region_rules or [])


def _banner_content(site: Site) -> dict[str, Any]:
    """What the banner shows; its hash changes when any of it changes.

    The region rules and the purposes' opt-out and notice flags are in it only where
    set, so a site that uses none keeps the hash it had before regions existed.
    """
    content: dict[str, Any] = {
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
                **({"opt_out": True} if purpose.is_opt_out_default else {}),
                **({"notice_only": True} if purpose.is_notice_only else {}),
            }
            for purpose in site.purposes
            if purpose.kind == "cookie"
        ],
    }
    if site.region_rules:
        content["region_rules"] = [regions.format_rule(rule) for rule in site.region_rules]
    return content


#: How the banner looks where a site sets nothing (``Site.appearance``).
DEFAULT_APPEARANCE = {
    "layout": "box",
    "theme": "auto",
    "settings_button": True,
    "button_side": "left",
}
APPEARANCE_CHOICES = {
    "layout": ("box", "bar", "modal"),
    "theme": ("auto", "light", "dark"),
    "settings_button": (True, False),
    "button_side": ("left", "right"),
}


def validate_appearance(appearance: dict[str, Any]) -> dict[str, Any]:
    """Return the appearance with defaults filled in; refuse unknown keys or values."""
    for name, value in appearance.items():
        if name not in APPEARANCE_CHOICES:
            raise InvalidRequest(name, f"{name!r} is not a banner appearance setting.")
        if value not in APPEARANCE_CHOICES[name] or type(value) is not type(
            APPEARANCE_CHOICES[name][0]
        ):
            choices = ", ".join(str(choice).lower() for choice in APPEARANCE_CHOICES[name])
            raise InvalidRequest(name, f"Choose {name} from: {choices}.")
    return {**DEFAULT_APPEARANCE, **appearance}


def _policy_entry(policy: PolicyVersion | None) -> dict[str, Any] | None:
    if policy is None:
        return None
    return {
        "version": policy.version,
        "url": policy.url,
        "published_at": policy.published_at.isoformat(),
        # The "Last Updated" date the policy page and the preference centre show.
        "updated_at": policy.published_at.date().isoformat(),
        "text_sha256": policy.text_sha256,
        "is_material": policy.is_material,
    }


def choose_language(site: Site, wanted: list[str]) -> str:
    """Return the first wanted language the site offers (as the widget picks), else its
    default: ``fr-CA`` matches ``fr``, ``nb`` matches ``no``."""
    return pick_language(wanted, site.languages, site.default_language)


def _only_languages(content: dict[str, Any], keep: set[str]) -> dict[str, Any]:
    """The content (or a configuration) with texts and translations for those only."""
    return {
        **content,
        "texts": {lang: texts for lang, texts in content["texts"].items() if lang in keep},
        "purposes": [
            {
                **purpose,
                "translations": {
                    lang: entry for lang, entry in purpose["translations"].items() if lang in keep
                },
            }
            for purpose in content["purposes"]
        ],
    }


def config_in_region(site: Site, config: dict[str, Any], region: str | None) -> dict[str, Any]:
    """The configuration for a visitor in ``region``: it names the region and the mode of
    the site's rule there (the hash covers every region's rules: the same everywhere)."""
    return {**config, "region": region, "mode": regions.mode_for(site.region_rules, region)}


def config_in_languages(
    site: Site, config: dict[str, Any], wanted_languages: list[str]
) -> dict[str, Any]:
    """The configuration with the texts of the visitor's language and the site's default
    only (the visitor's languages best first); ``languages`` still lists all, and the
    hash still covers all."""
    chosen = choose_language(site, wanted_languages)
    return _only_languages(config, {chosen, site.default_language})


def banner_config(site: Site, *, max_age: int = 300) -> dict[str, Any]:
    """The configuration the widget needs, with the hash of what it shows.

    It names the policy in effect and the versions scheduled ahead, so the widget
    switches at a scheduled version's time without asking; ``max_age`` is how long a
    copy may be used before the widget asks again. As made here it is for an unknown
    region (what the archive keeps); ``config_in_region`` makes it a visitor's.
    """
    content = _banner_content(site)
    serialised = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    now = now_utc()
    material = latest_material_policy(site, now=now)
    return {
        "site": {"key": site.key, "name": site.name},
        # Outside the hash: where the service runs is no choice the visitor was shown.
        "rights_request_url": public_url("rights_pages.request_form", site_key=site.key),
        "config_hash": hashlib.sha256(serialised.encode()).hexdigest(),
        "policy": _policy_entry(latest_policy(site, now=now)),
        "material_version": material.version if material else None,
        "scheduled_policies": [
            _policy_entry(policy) for policy in scheduled_policies(site, now=now)
        ],
        "lifetime_days": site.lifetime_days,
        "max_age": max_age,
        # Pages elsewhere get no banner: the widget fails closed there (a ?site= bundle
        # is a script, which any page can load).
        "origins": site.allowed_origins,
        "appearance": validate_appearance(site.appearance or {}),
        "region": None,
        "mode": regions.OPT_IN,
        # Google Consent Mode's per-region defaults, for tags that place visitors themselves.
        "consent_mode_regions": regions.consent_mode_regions(site.region_rules),
        **content,
    }


def count_banner_shown(site: Site) -> None:
    """Add one to today's count of first-layer displays; no identifier is stored."""
    statement = insert_for_dialect(BannerImpression).values(
        site_id=site.id, day=now_utc().date(), count=1
    )
    db.session.execute(
        statement.on_conflict_do_update(
            index_elements=["site_id", "day"],
            set_={"count": BannerImpression.count + 1},
        )
    )


def count_refused_origin(site: Site, origin: str) -> None:
    """Add one to the count of requests from an origin the site does not allow.

    Only well-formed origins are kept, and at most ``MAX_REFUSED_ORIGINS`` per site:
    forged Origin headers cannot grow the table without limit.
    """
    if len(origin) > 300 or not ORIGIN_PATTERN.match(origin):
        return
    now = now_utc()
    if db.session.get(RefusedOrigin, (site.id, origin)) is None:
        kept = select(func.count()).where(RefusedOrigin.site_id == site.id)
        if db.session.scalar(kept) >= MAX_REFUSED_ORIGINS:
            return
    statement = insert_for_dialect(RefusedOrigin).values(
        site_id=site.id, origin=origin, count=1, first_seen_at=now, last_seen_at=now
    )
    db.session.execute(
        statement.on_conflict_do_update(
            index_elements=["site_id", "origin"],
            set_={"count": RefusedOrigin.count + 1, "last_seen_at": now},
        )
    )


def refused_origins(site: Site) -> list[RefusedOrigin]:
    """Return the origins refused for the site, most often refused first."""
    return list(
        db.session.scalars(
            select(RefusedOrigin)
            .where(RefusedOrigin.site_id == site.id)
            .order_by(RefusedOrigin.count.desc(), RefusedOrigin.origin)
        )
    )


# --- policy versions ----------------------------------------------------------------


def latest_policy(site: Site, *, now: datetime | None = None) -> PolicyVersion | None:
    """Return the version in effect now (a scheduled one counts from its time)."""
    return db.session.scalars(
        select(PolicyVersion)
        .where(PolicyVersion.site_id == site.id, PolicyVersion.published_at <= (now or now_utc()))
        .order_by(PolicyVersion.published_at.desc(), PolicyVersion.id.desc())
        .limit(1)
    ).first()


def latest_material_policy(site: Site, *, now: datetime | None = None) -> PolicyVersion | None:
    """Return the latest material version in effect now: decisions before it are stale."""
    return db.session.scalars(
        select(PolicyVersion)
        .where(
            PolicyVersion.site_id == site.id,
            PolicyVersion.is_material.is_(True),
            PolicyVersion.published_at <= (now or now_utc()),
        )
        .order_by(PolicyVersion.published_at.desc(), PolicyVersion.id.desc())
        .limit(1)
    ).first()


def scheduled_policies(site: Site, *, now: datetime | None = None) -> list[PolicyVersion]:
    """Return the versions published ahead of time, soonest first."""
    return list(
        db.session.scalars(
            select(PolicyVersion)
            .where(
                PolicyVersion.site_id == site.id, PolicyVersion.published_at > (now or now_utc())
            )
            .order_by(PolicyVersion.published_at, PolicyVersion.id)
        )
    )
