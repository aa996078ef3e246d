"""The service's tables.

Two kinds of data live here and never mix:

* the **history** (``ConsentRecord``): insert-only, chained by hash, guarded by
  database triggers; it holds pseudonymous ids and decisions, never a direct identifier;
* the other **proof tables** (``ChainCheckpoint``, ``AccessLogEntry``,
  ``AccessLogCheckpoint``, ``ErasedIdentifier``, ``BannerVersion``): insert-only too,
  except the retention purge's documented path (see ``consent.retention``);
* everything else (sites, purposes, subjects, current state, keys): ordinary mutable
  rows. Identifying data (email, the site's user id) lives only on ``Subject``,
  encrypted, so erasure never has to touch the history.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from consent.db import UTCDateTime, db, now_utc

#: How long a choice stands by default (six months, the CNIL's good practice) and at most.
DEFAULT_LIFETIME_DAYS = 182
MAX_LIFETIME_DAYS = 395
#: Retention defaults: records three years, the access log two (to answer a complaint),
#: rights requests three years after they close, idempotency answers a day.
DEFAULT_RETENTION_DAYS = 3 * 365
DEFAULT_ACCESS_LOG_RETENTION_DAYS = 2 * 365
DEFAULT_RIGHTS_REQUEST_RETENTION_DAYS = 3 * 365
DEFAULT_IDEMPOTENCY_RETENTION_HOURS = 24

PURPOSE_KINDS = ("cookie", "communication")
RECORD_SOURCES = ("banner", "preferences", "api", "gpc", "unsubscribe", "import")
#: What a record says happened: a choice, a visitor linked to a user, an erasure.
RECORD_EVENTS = ("decision", "link", "erasure", "correction", "purge")
#: read: checks and suppression; write: record and link; rights: export, correct, erase.
API_SCOPES = ("read", "write", "rights")
#: How many distinct refused origins are kept per site (the rest are not counted).
MAX_REFUSED_ORIGINS = 50


class Site(db.Model):
    """One website or app: a tenant with its own purposes, policies, keys and chain."""

    __tablename__ = "sites"
    __table_args__ = (
        CheckConstraint(f"lifetime_days BETWEEN 1 AND {MAX_LIFETIME_DAYS}", name="lifetime_range"),
        CheckConstraint("retention_days >= lifetime_days", name="retention_covers_lifetime"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    #: Public key the widget names in ``data-site``; safe to show to anyone.
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    #: Origins (scheme://host[:port]) allowed to call the public API from a browser.
    allowed_origins: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: How many days a decision stands before the visitor is asked again.
    lifetime_days: Mapped[int] = mapped_column(Integer, default=DEFAULT_LIFETIME_DAYS)
    #: How many days records are kept before ``purge`` may remove them.
    retention_days: Mapped[int] = mapped_column(Integer, default=DEFAULT_RETENTION_DAYS)
    languages: Mapped[list[str]] = mapped_column(JSON, default=lambda: ["en"])
    default_language: Mapped[str] = mapped_column(String(16), default="en")
    #: Banner texts per language: {"en": {"title": ..., "accept_all": ...}}.
    texts: Mapped[dict[str, dict[str, str]]] = mapped_column(JSON, default=dict)
    #: How many days access-log entries are kept before ``purge`` may remove them.
    access_log_retention_days: Mapped[int] = mapped_column(
        Integer, default=DEFAULT_ACCESS_LOG_RETENTION_DAYS
    )
    #: How many days a rights request is kept once completed or refused.
    rights_request_retention_days: Mapped[int] = mapped_column(
        Integer, default=DEFAULT_RIGHTS_REQUEST_RETENTION_DAYS
    )
    #: How many hours an Idempotency-Key's stored answer is kept.
    idempotency_retention_hours: Mapped[int] = mapped_column(
        Integer, default=DEFAULT_IDEMPOTENCY_RETENTION_HOURS
    )
    #: Who is responsible for the data (shown in consent receipts).
    controller_name: Mapped[str | None] = mapped_column(String(200))
    controller_contact: Mapped[str | None] = mapped_column(String(200))
    #: An http(s) URL of the site's logo, shown on its email preference centre.
    logo_url: Mapped[str | None] = mapped_column(String(2000))
    #: How the banner looks: {"layout": "box"|"bar"|"modal", "theme": "auto"|"light"|"dark",
    #: "settings_button": bool, "button_side": "left"|"right"}; unset keys take defaults.
    appearance: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: Which mode applies where, first match wins (``consent.regions``):
    #: [{"regions": ["US-PRIVACY-STATES"], "mode": "opt-out"}]; empty: opt-in everywhere.
    region_rules: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    #: Bumped by the database (triggers) whenever the site, its purposes, policy versions
    #: or webhook endpoints change: per-process copies check it (``consent.site_facts``).
    config_version: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)

    purposes: Mapped[list[Purpose]] = relationship(
        back_populates="site", order_by="Purpose.position", cascade="all, delete-orphan"
    )
    policy_versions: Mapped[list[PolicyVersion]] = relationship(
        back_populates="site", order_by="PolicyVersion.published_at"
    )


class Purpose(db.Model):
    """A category a visitor decides on (cookies) or a kind of message (communication)."""

    __tablename__ = "purposes"
    __table_args__ = (
        UniqueConstraint("site_id", "key"),
        CheckConstraint("kind IN ('cookie', 'communication')", name="kind"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16), default="cookie")
    #: Required purposes are always allowed and cannot be refused (strictly necessary).
    is_required: Mapped[bool] = mapped_column(Boolean, default=False)
    position: Mapped[int] = mapped_column(Integer, default=0)
    #: {"en": {"title": ..., "description": ...}}
    translations: Mapped[dict[str, dict[str, str]]] = mapped_column(JSON, default=dict)
    #: Cookies set directly under this purpose: [{"name", "is_prefix", "provider", ...}].
    cookies: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    #: Vendors inside the purpose, each decidable on its own: [{"key", "name", "cookies"}].
    services: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    #: Google Consent Mode v2 signals this purpose grants, e.g. ["analytics_storage"].
    consent_mode: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: Under an opt-out (or notice) rule it runs until the person opts out.
    is_opt_out_default: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Under a notice rule it runs with information only (the person may still opt out).
    is_notice_only: Mapped[bool] = mapped_column(Boolean, default=False)

    site: Mapped[Site] = relationship(back_populates="purposes")

    @property
    def service_keys(self) -> set[str]:
        return {service["key"] for service in self.services}


class PolicyVersion(db.Model):
    """A published version of the site's privacy and cookie policy."""

    __tablename__ = "policy_versions"
    __table_args__ = (UniqueConstraint("site_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    #: The label people see ("2026-11-01", "v3"); unique per site.
    version: Mapped[str] = mapped_column(String(64))
    url: Mapped[str | None] = mapped_column(String(2000))
    #: SHA-256 of the policy text as published (``add-policy --text-file``).
    text_sha256: Mapped[str | None] = mapped_column(String(64))
    #: When the version takes effect: in the future for a scheduled version, which the
    #: banner configuration announces ahead and which counts for staleness only from then.
    published_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    #: A material change makes every earlier decision stale: the banner asks again.
    is_material: Mapped[bool] = mapped_column(Boolean, default=False)

    site: Mapped[Site] = relationship(back_populates="policy_versions")


class Subject(db.Model):
    """A person, as the site knows them: pseudonymous, with optional identifiers.

    The identifiers (email, the site's own user id) are stored encrypted with a keyed
    hash beside them for exact lookup; they live only here, never in the history.
    """

    __tablename__ = "subjects"
    __table_args__ = (
        UniqueConstraint("site_id", "user_id_digest"),
        UniqueConstraint("site_id", "email_digest"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    #: Random id that stands for the person in the history.
    pseudonym: Mapped[str] = mapped_column(String(40), unique=True)
    #: HMAC of the site's user id: lookup without storing it in the clear.
    user_id_digest: Mapped[str | None] = mapped_column(String(64))
    user_id_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    email_digest: Mapped[str | None] = mapped_column(String(64))
    email_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    #: Set by erasure: every check for this person then answers not allowed.
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    visitors: Mapped[list[Visitor]] = relationship(back_populates="subject")


class Visitor(db.Model):
    """A browser's random id, issued by the service, pointing at its subject.

    Several visitors (devices) point at one subject once linked to the same user id.
    """

    __tablename__ = "visitors"
    #: SQLite: the rows in the key's own B-tree, one page per lookup (migration 0015).
    __table_args__ = {"sqlite_with_rowid": False}

    visitor_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    #: The last submission from this browser; retention forgets visitors unseen too long.
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    subject: Mapped[Subject] = relationship(back_populates="visitors")


class ConsentRecord(db.Model):
    """One submission, appended to the site's hash chain. Insert-only.

    There is no update path in the code, and triggers created by the migrations make
    the database itself refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL).
    ``record_hash`` is SHA-256 over the canonical form of every other column, including
    ``previous_hash``, so any edit, removal or reordering shows in ``verify_chain``.
    """

    __tablename__ = "consent_records"
    __table_args__ = (
        UniqueConstraint("site_id", "sequence"),
        Index("ix_consent_records_subject", "site_id", "subject_pseudonym", "sequence"),
        # The admin's rates and record log read a date window of one site's history.
        Index("ix_consent_records_site_recorded_at", "site_id", "recorded_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    #: Position in the site's chain, 1 for the first record; no gaps, no forks.
    sequence: Mapped[int] = mapped_column(Integer)
    subject_pseudonym: Mapped[str] = mapped_column(String(40))
    event: Mapped[str] = mapped_column(String(16), default="decision")
    source: Mapped[str] = mapped_column(String(16))
    #: [{"purpose": "analytics", "granted": true, "services": {"matomo": false}}, ...]
    decisions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    #: Event-specific facts without identifiers, e.g. {"linked_from": pseudonym}.
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    policy_version: Mapped[str | None] = mapped_column(String(64))
    #: Hash of the banner configuration the visitor was shown, as the widget sent it.
    config_hash: Mapped[str | None] = mapped_column(String(64))
    language: Mapped[str | None] = mapped_column(String(16))
    #: The browser sent a Global Privacy Control signal (Sec-GPC: 1).
    is_gpc: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Client address with the host part removed (/24 for IPv4, /48 for IPv6).
    ip_truncated: Mapped[str | None] = mapped_column(String(64))
    #: The visitor's ISO 3166 region (``FR``, ``US-CA``) when known, and the mode of the
    #: site's rule for it (opt-in, opt-out, notice); both null on records made before.
    region: Mapped[str | None] = mapped_column(String(8))
    mode: Mapped[str | None] = mapped_column(String(16))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    previous_hash: Mapped[str] = mapped_column(String(64))
    record_hash: Mapped[str] = mapped_column(String(64), unique=True)


class ChainCheckpoint(db.Model):
    """Where retention cut a site's chain: the last removed record's sequence and hash.

    ``verify_chain`` starts from the latest checkpoint. The signature (HMAC with the
    app's secret key) stops someone with only database access from hiding deleted
    records behind a forged checkpoint. Insert-only, guarded by triggers.
    """

    __tablename__ = "chain_checkpoints"
    __table_args__ = (UniqueConstraint("site_id", "sequence"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    #: The last sequence removed: records up to and including it are gone.
    sequence: Mapped[int] = mapped_column(Integer)
    record_hash: Mapped[str] = mapped_column(String(64))
    records_removed: Mapped[int] = mapped_column(Integer)
    purged_at: Mapped[datetime] = mapped_column(UTCDateTime)
    signature: Mapped[str] = mapped_column(String(64))


class ChainHead(db.Model):
    """The last link of a site's chain; its row lock serialises appends per site."""

    __tablename__ = "chain_heads"

    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), primary_key=True)
    sequence: Mapped[int] = mapped_column(Integer, default=0)
    record_hash: Mapped[str] = mapped_column(String(64))


class CurrentState(db.Model):
    """The latest decision per subject, purpose and service, kept with each append.

    ``service`` is "" for the purpose as a whole. The check reads this table only.
    """

    __tablename__ = "current_states"
    __table_args__ = {"sqlite_with_rowid": False}  # as ``visitors``

    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"), primary_key=True)
    purpose_id: Mapped[int] = mapped_column(
        ForeignKey("purposes.id", ondelete="CASCADE"), primary_key=True
    )
    service: Mapped[str] = mapped_column(String(64), primary_key=True, default="")
    is_granted: Mapped[bool] = mapped_column(Boolean)
    #: A refusal that replaced an earlier grant.
    is_withdrawal: Mapped[bool] = mapped_column(Boolean, default=False)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: When the policy version the decision was taken under was published.
    policy_published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The record that made this decision; cleared when retention purges that record.
    record_id: Mapped[int | None] = mapped_column(ForeignKey("consent_records.id"))
    source: Mapped[str] = mapped_column(String(16))


class ApiKey(db.Model):
    """A server API key for one site. Only a SHA-256 of the secret is stored."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    #: Public, non-secret start of the key, shown in listings and used for lookup.
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    #: Space-separated subset of API_SCOPES.
    scopes: Mapped[str] = mapped_column(String(64), default="read")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    site: Mapped[Site] = relationship()

    @property
    def scope_set(self) -> set[str]:
        return set(self.scopes.split())


class IdempotentRequest(db.Model):
    """The first answer to a submission sent with an ``Idempotency-Key`` header."""

    __tablename__ = "idempotent_requests"
    __table_args__ = (UniqueConstraint("site_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    #: SHA-256 of the client's ``Idempotency-Key`` (hex): the key itself is not kept.
    key: Mapped[str] = mapped_column(String(200))
    #: SHA-256 of the request body and visitor: the same key with another body is refused.
    request_digest: Mapped[str] = mapped_column(String(64))
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)


class BannerImpression(db.Model):
    """How often the first layer was shown, per site and day, with no identifier."""

    __tablename__ = "banner_impressions"

    site_id: Mapped[int] = mapped_column(
        ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class RefusedOrigin(db.Model):
    """How often pages on an origin the site does not allow asked for its banner.

    Per site and origin, nothing else (no address, no visitor); at most
    ``MAX_REFUSED_ORIGINS`` origins per site, so forged Origin headers cannot grow it.
    """

    __tablename__ = "refused_origins"

    site_id: Mapped[int] = mapped_column(
        ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True
    )
    origin: Mapped[str] = mapped_column(String(300), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)


class ErasedIdentifier(db.Model):
    """The keyed hash of an erased email or user id, so it stays suppressed.

    Only the HMAC is kept (no value, no link to the pseudonym): enough to answer
    "erased" when the same address is checked again, nothing to identify anyone by.
    """

    __tablename__ = "erased_identifiers"

    site_id: Mapped[int] = mapped_column(
        ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True
    )
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    erased_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)


class AccessLogEntry(db.Model):
    """Who looked at, exported, corrected or erased a person's data, why and when.

    Insert-only and chained per site like the history: ``entry_hash`` is SHA-256 over
    every other column, ``previous_hash`` included, so ``verify`` names any edit or
    removal. Triggers refuse UPDATE, and DELETE unless a signed checkpoint covers the
    entry (retention).
    """

    __tablename__ = "access_log"
    __table_args__ = (
        Index("ix_access_log_site_at", "site_id", "at"),
        UniqueConstraint("site_id", "sequence"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"))
    #: Position in the site's access-log chain, 1 for the first entry.
    sequence: Mapped[int] = mapped_column(Integer)
    #: "api_key:<prefix>", "admin:<name>", "cli", "person" (by a verified link) or "service".
    actor: Mapped[str] = mapped_column(String(200))
    #: lookup, export, erase, correct, bulk_check, suppression, rights_request, ...
    action: Mapped[str] = mapped_column(String(32))
    subject_pseudonym: Mapped[str | None] = mapped_column(String(40))
    #: Why: free text or a ticket number; required for exports and erasures in the admin.
    reason: Mapped[str | None] = mapped_column(String(500))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    previous_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64), unique=True)


class AccessLogHead(db.Model):
    """The last link of a site's access-log chain; its row lock serialises appends."""

    __tablename__ = "access_log_heads"

    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), primary_key=True)
    sequence: Mapped[int] = mapped_column(Integer, default=0)
    entry_hash: Mapped[str] = mapped_column(String(64))


class AccessLogCheckpoint(db.Model):
    """Where retention cut a site's access log: the last removed entry and its hash.

    Signed like ``ChainCheckpoint``; insert-only, guarded by triggers.
    """

    __tablename__ = "access_log_checkpoints"
    __table_args__ = (UniqueConstraint("site_id", "sequence"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    sequence: Mapped[int] = mapped_column(Integer)
    entry_hash: Mapped[str] = mapped_column(String(64))
    entries_removed: Mapped[int] = mapped_column(Integer)
    purged_at: Mapped[datetime] = mapped_column(UTCDateTime)
    signature: Mapped[str] = mapped_column(String(64))


class BannerVersion(db.Model):
    """A banner configuration exactly as the service served it, under its ``config_hash``.

    ``content`` is what the hash covers (texts in every language, purposes, services,
    cookies), so anyone can recompute the hash from it; the policy and widget it was
    first served with stand beside it. Insert-only except ``last_served_at``; retention
    may remove an entry no record points to.
    """

    __tablename__ = "banner_versions"

    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), primary_key=True)
    config_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    content: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: The latest policy when first served: {"version", "url", "published_at", "text_sha256"}.
    policy: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    widget_version: Mapped[str] = mapped_column(String(32))
    #: The widget script's Subresource Integrity hash ("sha384-...").
    widget_integrity: Mapped[str] = mapped_column(String(100))
    first_served_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_served_at: Mapped[datetime] = mapped_column(UTCDateTime)


RIGHTS_KINDS = ("access", "export", "correction", "erasure", "objection")
RIGHTS_STATES = ("received", "verified", "extended", "completed", "refused")


class RightsRequest(db.Model):
    """A person's request to exercise a right, from receipt to completion.

    The contact email is stored encrypted (it may belong to nobody the site knows);
    each step is also written to the access log.
    """

    __tablename__ = "rights_requests"
    __table_args__ = (
        Index("ix_rights_requests_site_due", "site_id", "state", "due_at"),
        CheckConstraint(
            "kind IN ('access', 'export', 'correction', 'erasure', 'objection')", name="kind"
        ),
        CheckConstraint(
            "state IN ('received', 'verified', 'extended', 'completed', 'refused')",
            name="state",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    #: Random public reference, shown to the person and in links.
    reference: Mapped[str] = mapped_column(String(40), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    #: web (the public form), email, admin, cli or api: how the request arrived.
    channel: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default="received")
    email_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    #: What the person wrote (what to correct, say); never shown outside the admin.
    message: Mapped[str | None] = mapped_column(String(2000))
    #: The subject the request is about, once identity is verified and matched.
    subject_pseudonym: Mapped[str | None] = mapped_column(String(40))
    #: email_link (the emailed link was followed) or site_backend (a logged-in user).
    verified_by: Mapped[str | None] = mapped_column(String(32))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    extended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    extension_reason: Mapped[str | None] = mapped_column(String(2000))
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    refused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    refusal_reason: Mapped[str | None] = mapped_column(String(2000))
    #: One month from receipt (GDPR Art. 12(3)); three once extended.
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)


SCAN_STATUSES = ("running", "done", "failed")


class Scan(db.Model):
    """One run of the cookie scanner over a site's pages, with what it found."""

    __tablename__ = "scans"
    __table_args__ = (
        Index("ix_scans_site_started_at", "site_id", "started_at"),
        CheckConstraint("status IN ('running', 'done', 'failed')", name="status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: "cli" or "admin:<name>".
    started_by: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="running")
    #: The URLs the scan started from.
    start_urls: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: The pages the passes visited.
    pages: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: [{"level", "kind", "subject", "pass_name", "page", ...}], as in the JSON report.
    findings: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    #: The whole JSON report (what was observed, problems), once finished.
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: Page visits done and expected (three passes), while it runs.
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    #: Why a failed scan failed, in one line.
    error: Mapped[str | None] = mapped_column(String(500))

    site: Mapped[Site] = relationship()


#: What a webhook endpoint may subscribe to; each is emitted in the transaction it reports.
WEBHOOK_EVENTS = (
    "consent.recorded",
    "consent.withdrawn",
    "marketing.unsubscribed",
    "subject.erased",
    "policy.published",
    # A rights request's steps: received, verified, extended, refused, completed.
    "rights_request.received",
    "rights_request.verified",
    "rights_request.extended",
    "rights_request.refused",
    "rights_request.completed",
)
#: pending (to send, maybe again), delivered (2xx), gave_up (every retry failed).
DELIVERY_STATUSES = ("pending", "delivered", "gave_up")


class WebhookEndpoint(db.Model):
    """A URL of another system that is told about a site's changes, signed."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    #: The subscribed subset of WEBHOOK_EVENTS.
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: The Standard Webhooks signing secret (whsec_...), encrypted with the data key.
    secret_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    #: Payloads to this endpoint carry the person's email where one is known.
    is_email_included: Mapped[bool] = mapped_column(Boolean, default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)

    site: Mapped[Site] = relationship()


class WebhookEvent(db.Model):
    """The outbox: one change to tell, written in the same transaction as the change."""

    __tablename__ = "webhook_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    #: The Standard Webhooks message id (webhook-id): the same on every retry.
    message_id: Mapped[str] = mapped_column(String(40), unique=True)
    type: Mapped[str] = mapped_column(String(64))
    #: The event's data, without direct identifiers.
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: The person's email, encrypted, for endpoints that include it; cleared once sent.
    email_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)


class WebhookDelivery(db.Model):
    """One event on its way to one endpoint: its status, retries and lease."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("webhook_events.id", ondelete="CASCADE"))
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    #: A dispatcher holds the delivery until then; another may take it over after.
    leased_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Which dispatcher holds the lease: only it may write the outcome.
    lease_token: Mapped[str | None] = mapped_column(String(40))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_latency_ms: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)

    event: Mapped[WebhookEvent] = relationship()
    endpoint: Mapped[WebhookEndpoint] = relationship()


class WebhookAttempt(db.Model):
    """One try of a delivery: the delivery log the admin shows."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    #: delivered, failed (will be retried) or gave_up.
    outcome: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))


class VerificationRun(db.Model):
    """The outcome of one ``verify`` of a site's chain (CLI or admin console)."""

    __tablename__ = "verification_runs"
    __table_args__ = (Index("ix_verification_runs_site_ran_at", "site_id", "ran_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    ran_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    #: "cli" or "admin:<name>".
    ran_by: Mapped[str] = mapped_column(String(200))
    is_intact: Mapped[bool] = mapped_column(Boolean)
    records_checked: Mapped[int] = mapped_column(Integer)
    first_bad_sequence: Mapped[int | None] = mapped_column(Integer)
    problem: Mapped[str | None] = mapped_column(Text)

    site: Mapped[Site] = relationship()
