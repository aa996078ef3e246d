"""The banner archive: every configuration the service served, kept under its hash.

A record names the ``config_hash`` of the banner its visitor was shown; the archive
maps that hash back to what the banner said (texts in every language, purposes,
services, cookies), the policy and the widget build it was served with, so what a
visitor saw can be shown after any later edit (GDPR Art. 7(1)).
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from consent.db import db, insert_for_dialect, now_utc
from consent.errors import InvalidRequest
from consent.models import BannerVersion, Site
from consent.sites import banner_config

log = logging.getLogger(__name__)
CONFIG_HASH = re.compile(r"^[0-9a-f]{64}\Z")
#: ``last_served_at`` moves at most this often: serving stays a read, nearly always.
LAST_SERVED_RESOLUTION = timedelta(hours=1)


def archive_banner_version(
    site: Site, config: dict[str, Any], widget, *, is_strict: bool = False
) -> None:
    """Keep the configuration being served, once; note when it was last served.

    ``widget`` is the served consent.js (``consent.widget.Asset``): its version and SRI
    hash are kept with the first serving of this configuration. Many visitors may be
    served a new configuration at once: the first insert wins, the others change
    nothing. Serving never fails for the archive's sake: if the database refuses the
    write (busy, read-only), the configuration is still served, and the first record
    that names it archives it (``require_served``, ``is_strict``: the error is raised).
    """
    now = now_utc()
    key = (site.id, config["config_hash"])
    try:
        with db.session.begin_nested():
            version = db.session.get(BannerVersion, key)
            if version is None:
                db.session.execute(
                    insert_for_dialect(BannerVersion)
                    .values(
                        site_id=site.id,
                        config_hash=config["config_hash"],
                        content=config,
                        policy=config.get("policy"),
                        widget_version=widget.version,
                        widget_integrity=widget.integrity,
                        first_served_at=now,
                        last_served_at=now,
                    )
                    .on_conflict_do_nothing(index_elements=["site_id", "config_hash"])
                )
            elif now - version.last_served_at >= LAST_SERVED_RESOLUTION:
                version.last_served_at = now
    except DBAPIError as error:
        if is_strict:
            raise
        log.warning("banner %s not archived now: %s", key[1][:12], type(error.orig).__name__)


def is_config_hash(value: str) -> bool:
    return CONFIG_HASH.match(value) is not None


def find_banner_version(site: Site, config_hash: str) -> BannerVersion | None:
    return db.session.get(BannerVersion, (site.id, config_hash))


def banner_versions_by_hash(site: Site, hashes: set[str]) -> dict[str, BannerVersion]:
    """The archived versions among these hashes, by hash."""
    if not hashes:
        return {}
    return {
        version.config_hash: version
        for version in db.session.scalars(
            select(BannerVersion).where(
                BannerVersion.site_id == site.id, BannerVersion.config_hash.in_(sorted(hashes))
            )
        )
    }


def require_served(site: Site, config_hash: str | None, widget) -> None:
    """Refuse a record naming a banner configuration the archive does not hold.

    The configuration being served now is archived on the spot: a page may hold it from
    a cache that answered before the archive saw it.
    """
    if config_hash is None or find_banner_version(site, config_hash) is not None:
        return
    config = banner_config(site)
    if config["config_hash"] == config_hash:
        archive_banner_version(site, config, widget, is_strict=True)
        return
    raise InvalidRequest(
        "config_hash",
        "This banner configuration was never served for this site: reload the banner.",
    )


def describe_banner_version(version: BannerVersion) -> dict[str, Any]:
    """The archived version as the API and the CLI show it."""
    return {
        "config_hash": version.config_hash,
        "first_served_at": version.first_served_at,
        "last_served_at": version.last_served_at,
        "policy": version.policy,
        "widget": {"version": version.widget_version, "integrity": version.widget_integrity},
        "content": version.content,
    }


def rendering(version: BannerVersion, language: str | None) -> dict[str, Any]:
    """What the banner showed in one language: texts and purposes, resolved."""
    content = version.content
    languages = content.get("languages") or []
    chosen = language if language in languages else content.get("default_language", "en")
    texts = content.get("texts", {}).get(chosen, {})
    purposes = []
    for purpose in content.get("purposes", []):
        translations = purpose.get("translations", {})
        words = translations.get(chosen) or translations.get(content.get("default_language")) or {}
        purposes.append({**purpose, "title": words.get("title", purpose["key"]), **words})
    return {"language": chosen, "texts": texts, "purposes": purposes}
