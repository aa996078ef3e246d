"""Visitors: the opaque ids the service issues to browsers, each naming one subject."""

from __future__ import annotations

import secrets

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Row
from sqlalchemy.orm import joinedload

from consent.db import db
from consent.models import Site, Subject, Visitor


def new_opaque_id() -> str:
    """Return a random, unguessable id for a visitor or a subject."""
    return secrets.token_urlsafe(18)


def create_visitor(site: Site, subject: Subject | None = None) -> Visitor:
    """Issue a new visitor id, for a new subject unless one is given."""
    if subject is None:
        subject = Subject(site_id=site.id, pseudonym=new_opaque_id())
        db.session.add(subject)
    visitor = Visitor(visitor_id=new_opaque_id(), site_id=site.id, subject=subject)
    db.session.add(visitor)
    db.session.flush()
    return visitor


def find_visitor(site: Site, visitor_id: str) -> Visitor | None:
    visitor = db.session.get(Visitor, visitor_id, options=[joinedload(Visitor.subject)])
    return visitor if visitor is not None and visitor.site_id == site.id else None


def live_subject(site_id: int, visitor_id: str, connection=None) -> Row | None:
    """The subject behind a visitor of this site (``id``, ``pseudonym``,
    ``email_encrypted``), in one statement (on ``connection`` if given, else the
    session's); None if unknown or erased."""
    where = {"visitor_id": visitor_id, "site_id": site_id}
    return (connection or db.session).execute(_LIVE_SUBJECT, where).first()


_LIVE_SUBJECT = (
    select(Subject.id, Subject.pseudonym, Subject.email_encrypted)
    .join(Visitor, Visitor.subject_id == Subject.id)
    .where(
        Visitor.visitor_id == bindparam("visitor_id"),
        Visitor.site_id == bindparam("site_id"),
        Subject.erased_at.is_(None),
    )
)
