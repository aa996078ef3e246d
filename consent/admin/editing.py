"""What the admin changes beyond consent.sites: site settings, purpose order, staleness."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, or_, select

from consent import identifiers
from consent.db import db, now_utc
from consent.models import CurrentState, Purpose, Site, Subject, Visitor
from consent.sites import banner_config, validate_appearance, validate_site_settings


def update_site(
    site: Site,
    *,
    name: str,
    origins: list[str],
    languages: list[str],
    lifetime_days: int,
    retention_days: int,
    texts: dict[str, dict[str, str]],
    controller_name: str | None,
    controller_contact: str | None,
    logo_url: str | None = None,
    appearance: dict | None = None,
) -> Site:
    """Change a site's settings; the first language becomes the default."""
    validate_site_settings(
        name=name,
        origins=origins,
        languages=languages,
        lifetime_days=lifetime_days,
        retention_days=retention_days,
        texts=texts,
        logo_url=logo_url,
    )
    site.name = name
    site.allowed_origins = list(origins)
    site.languages = list(languages)
    site.default_language = languages[0]
    site.lifetime_days = lifetime_days
    site.retention_days = retention_days
    site.texts = texts
    site.controller_name = controller_name or None
    site.controller_contact = controller_contact or None
    site.logo_url = logo_url or None
    if appearance is not None:
        site.appearance = validate_appearance(appearance)
    db.session.flush()
    return site


def move_purpose(site: Site, key: str, offset: int) -> None:
    """Move a purpose up (-1) or down (+1) in the banner; positions become 0..n-1."""
    ordered = sorted(site.purposes, key=lambda purpose: (purpose.position, purpose.id))
    index = next(i for i, purpose in enumerate(ordered) if purpose.key == key)
    target = min(max(index + offset, 0), len(ordered) - 1)
    ordered.insert(target, ordered.pop(index))
    for position, purpose in enumerate(ordered):
        purpose.position = position
    db.session.flush()
    db.session.expire(site, ["purposes"])


def config_hash(site: Site) -> str:
    return banner_config(site)["config_hash"]


def stale_decision_count(site: Site, published_at: datetime) -> int:
    """How many current decisions a material version published then makes stale.

    Counts purpose-level decisions still in force (not expired, optional purposes only)
    taken under a policy published earlier, or under none.
    """
    return db.session.scalar(
        select(func.count())
        .select_from(CurrentState)
        .join(Purpose, Purpose.id == CurrentState.purpose_id)
        .where(
            Purpose.site_id == site.id,
            Purpose.is_required.is_(False),
            CurrentState.service == "",
            CurrentState.expires_at > now_utc(),
            or_(
                CurrentState.policy_published_at.is_(None),
                CurrentState.policy_published_at < published_at,
            ),
        )
    )


def find_subject_by_pseudonym(site: Site, pseudonym: str) -> Subject | None:
    return db.session.scalars(
        select(Subject).where(Subject.site_id == site.id, Subject.pseudonym == pseudonym)
    ).first()


def identifiers_of(subject: Subject) -> dict:
    """The person's email, site user id (decrypted) and visitor ids, for the admin's eyes."""
    return {
        "email": _decrypted(subject.email_encrypted),
        "user_id": _decrypted(subject.user_id_encrypted),
        "visitor_ids": db.session.scalars(
            select(Visitor.visitor_id).where(Visitor.subject_id == subject.id)
        ).all(),
    }


def _decrypted(blob: bytes | None) -> str | None:
    return identifiers.decrypt(blob) if blob else None
