"""What recording needs to know about a site, kept per process between requests.

Every record reads the site's settings, purposes, policy versions and webhook endpoints;
loading them through the ORM cost more than the record's own statements. They change
rarely, so each process keeps them as plain, immutable facts, and checks them on every
use against the site's ``config_version``, which the database itself bumps on any change
to those rows (migration 0013): one indexed read of two columns instead of four loads,
and a copy never outlives a committed change. The banner's fast path reads no version
at all: the batch that appends its submission checks it, under the chain lock, in the
same statement that locks the chain (``ledger``). A copy is also rebuilt once it is
``MAX_AGE`` old, which bounds how long a banner version is trusted as archived.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import bindparam, select

from consent.db import db, now_utc, session_reads_only
from consent.errors import InvalidRequest
from consent.models import PolicyVersion, Purpose, Site, WebhookEndpoint
from consent.sites import is_site_key

#: ``app.extensions`` key of the process's copies, by site key.
CACHE = "consent.site_facts"
#: Seconds a copy is used at most, even with no change to the site.
MAX_AGE = 60.0


@dataclass(frozen=True)
class PurposeFacts:
    id: int
    key: str
    is_required: bool
    service_keys: frozenset[str]
    consent_mode: tuple[str, ...]


@dataclass(frozen=True)
class PolicyFacts:
    version: str
    published_at: datetime
    is_material: bool


@dataclass(frozen=True)
class EndpointFacts:
    id: int
    events: tuple[str, ...]
    is_email_included: bool


@dataclass(frozen=True)
class SiteFacts:
    """A site as recording reads it, at one ``config_version``."""

    id: int
    key: str
    config_version: int
    lifetime_days: int
    allowed_origins: tuple[str, ...]
    region_rules: list[dict[str, Any]]
    purposes: tuple[PurposeFacts, ...]
    #: Newest first (published_at, then id), scheduled ones included.
    policies: tuple[PolicyFacts, ...]
    #: The active endpoints only.
    endpoints: tuple[EndpointFacts, ...]
    loaded_at: float = field(default_factory=time.monotonic, compare=False)
    #: Banner configurations found archived (and committed) while this copy is in use.
    served: set[str] = field(default_factory=set, compare=False)

    def policy(self, version: str | None, *, now: datetime | None = None) -> PolicyFacts | None:
        """The named version (422 if unknown) or, without a name, the one in effect now."""
        if version is None:
            now = now or now_utc()
            return next((p for p in self.policies if p.published_at <= now), None)
        for policy in reversed(self.policies):  # the first published of that name
            if policy.version == version:
                return policy
        raise InvalidRequest("policy_version", f"Unknown policy version {version!r}.")


def facts_of(site: Site) -> SiteFacts:
    """The facts of a site already loaded (in this transaction: its changes included)."""
    return _build(site, site.config_version)


def kept_copy(app, site_key: str) -> SiteFacts | None:
    """This process's copy of the site's facts, not checked against the database (the
    caller has that done under the chain lock); None: no copy, or one too old."""
    copy = app.extensions.get(CACHE, {}).get(site_key)
    return copy if copy is not None and _is_young(copy) else None


_VERSION = select(Site.id, Site.config_version).where(Site.key == bindparam("key"))


def _is_current(copy: SiteFacts | None, version) -> bool:
    """Whether a copy is of the site with this (id, config_version) row, and young enough."""
    return (
        copy is not None
        and version is not None
        and (copy.id, copy.config_version) == tuple(version)
        and _is_young(copy)
    )


def _is_young(copy: SiteFacts) -> bool:
    return time.monotonic() - copy.loaded_at <= MAX_AGE


def site_facts(site_key: str) -> SiteFacts | None:
    """The site's facts, from this process's copy if it is current; None: no such site.

    A copy is kept only from a request whose session only reads: one that wrote might
    hold changes of its own that are never committed.
    """
    if not is_site_key(site_key):
        return None
    row = db.session.execute(_VERSION, {"key": site_key}).first()
    if row is None:
        return None
    copies: dict[str, SiteFacts] = current_app.extensions.setdefault(CACHE, {})
    copy = copies.get(site_key)
    if not _is_current(copy, row):
        copy = _build(db.session.get(Site, row.id), row.config_version)
        if session_reads_only():
            copies[site_key] = copy
    return copy


def _build(site: Site, config_version: int) -> SiteFacts:
    purposes = db.session.scalars(
        select(Purpose).where(Purpose.site_id == site.id).order_by(Purpose.position, Purpose.id)
    )
    policies = db.session.execute(
        select(PolicyVersion.version, PolicyVersion.published_at, PolicyVersion.is_material)
        .where(PolicyVersion.site_id == site.id)
        .order_by(PolicyVersion.published_at.desc(), PolicyVersion.id.desc())
    )
    endpoints = db.session.execute(
        select(WebhookEndpoint.id, WebhookEndpoint.events, WebhookEndpoint.is_email_included)
        .where(WebhookEndpoint.site_id == site.id, WebhookEndpoint.is_active.is_(True))
        .order_by(WebhookEndpoint.id)
    )
    return SiteFacts(
        id=site.id,
        key=site.key,
        config_version=config_version,
        lifetime_days=site.lifetime_days,
        allowed_origins=tuple(site.allowed_origins),
        region_rules=site.region_rules,
        purposes=tuple(
            PurposeFacts(p.id, p.key, p.is_required, frozenset(p.service_keys), (*p.consent_mode,))
            for p in purposes
        ),
        policies=tuple(PolicyFacts(*row) for row in policies),
        endpoints=tuple(EndpointFacts(id_, (*events,), email) for id_, events, email in endpoints),
    )
