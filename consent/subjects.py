"""Who a submission is about: subjects, their identifiers, and linking a visitor to one."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from consent import identifiers
from consent.chain import append_record, lock_chain
from consent.db import db
from consent.errors import InvalidRequest
from consent.models import CurrentState, Site, Subject
from consent.visitors import find_visitor, new_opaque_id


def find_subject_by(site: Site, kind: str, value: str) -> Subject | None:
    """Find a subject by ``user_id`` or ``email`` through its keyed hash."""
    value = _normalise(kind, value)
    column = Subject.user_id_digest if kind == "user_id" else Subject.email_digest
    return db.session.scalars(
        select(Subject).where(
            Subject.site_id == site.id,
            column.in_(identifiers.lookup_digests(kind, site.id, value)),
        )
    ).first()


def find_or_create_subject_by(site: Site, kind: str, value: str) -> Subject:
    """The subject with this user id or email, created (pseudonymous) if there is none."""
    subject = find_subject_by(site, kind, value)
    if subject is None:
        subject = Subject(site_id=site.id, pseudonym=new_opaque_id())
        set_identifier(subject, kind, value)
        db.session.add(subject)
        db.session.flush()
    return subject


def find_or_create_subject_with(site: Site, user_id: str, email: str) -> Subject:
    """The person with this user id and email: found by either, given the other if missing.

    Refused (on the field at fault) when the two already belong to different people,
    or when the one found already has another value: that is a correction.
    """
    by_user = find_subject_by(site, "user_id", user_id)
    by_email = find_subject_by(site, "email", email)
    if by_user is not None and by_email is not None and by_user.id != by_email.id:
        raise InvalidRequest("email", "This email belongs to another person on the site.")
    subject = by_user or by_email
    if subject is None:
        subject = find_or_create_subject_by(site, "user_id", user_id)
        by_user = subject
    for kind, value, found in (("email", email, by_email), ("user_id", user_id, by_user)):
        if found is not None:
            continue
        if getattr(subject, f"{kind}_digest") is not None:
            raise InvalidRequest(
                kind, f"This person has another {kind}; change it with /v1/server/subjects/correct."
            )
        set_identifier(subject, kind, value)
    db.session.flush()
    return subject


def set_identifier(subject: Subject, kind: str, value: str | None) -> None:
    """Store (encrypted, with its lookup hash) or clear a subject's user id or email."""
    if value is None:
        digest = encrypted = None
    else:
        value = _normalise(kind, value)
        digest = identifiers.digest(kind, subject.site_id, value)
        encrypted = identifiers.encrypt(value)
    setattr(subject, f"{kind}_digest", digest)
    setattr(subject, f"{kind}_encrypted", encrypted)


def _normalise(kind: str, value: str) -> str:
    if kind == "email":
        return identifiers.normalise_email(value)
    if kind == "user_id":
        return identifiers.normalise_user_id(value)
    raise ValueError(kind)


def link_visitor(site: Site, visitor_id: str, user_id: str):
    """Make a visitor's consent follow the site's user across devices.

    The visitor joins the user's subject; per purpose, the newer of the two subjects'
    decisions wins. The link is itself appended to the history.
    """
    lock_chain(site)
    visitor = find_visitor(site, visitor_id)
    if visitor is None:
        raise InvalidRequest("visitor_token", "This visitor has no recorded decision yet.")
    previous = visitor.subject
    target = find_subject_by(site, "user_id", user_id)
    if target is None:
        if previous.user_id_digest is None and previous.erased_at is None:
            set_identifier(previous, "user_id", user_id)
            db.session.flush()
            record = append_record(
                site, previous, event="link", source="api", details={"linked": "user_id"}
            )
            return previous, record
        target = find_or_create_subject_by(site, "user_id", user_id)
    if target is previous:
        record = append_record(
            site, target, event="link", source="api", details={"linked": "user_id"}
        )
        return target, record
    adopted = _merge_states(previous, target)
    visitor.subject = target
    db.session.flush()
    record = append_record(
        site,
        target,
        event="link",
        source="api",
        decisions=adopted,
        details={"linked": "user_id", "merged_from": previous.pseudonym},
    )
    return target, record


def _merge_states(source: Subject, target: Subject) -> list[dict[str, Any]]:
    """Copy into ``target`` each purpose whose decision in ``source`` is newer.

    A purpose moves whole (its purpose-level state with its per-service states).
    Returns the adopted decisions in the record's canonical form.
    """

    def by_purpose(subject: Subject) -> dict[int, dict[str, CurrentState]]:
        grouped: dict[int, dict[str, CurrentState]] = {}
        for state in db.session.scalars(
            select(CurrentState).where(CurrentState.subject_id == subject.id)
        ):
            grouped.setdefault(state.purpose_id, {})[state.service] = state
        return grouped

    theirs, ours = by_purpose(source), by_purpose(target)
    purposes = {purpose.id: purpose for purpose in target_site_purposes(target)}
    adopted = []
    for purpose_id, states in theirs.items():
        mine = ours.get(purpose_id, {})
        if "" not in states or ("" in mine and mine[""].decided_at >= states[""].decided_at):
            continue
        for state in mine.values():
            db.session.delete(state)
        db.session.flush()
        for state in states.values():
            db.session.add(
                CurrentState(
                    subject_id=target.id,
                    purpose_id=purpose_id,
                    service=state.service,
                    is_granted=state.is_granted,
                    is_withdrawal=state.is_withdrawal,
                    decided_at=state.decided_at,
                    expires_at=state.expires_at,
                    policy_published_at=state.policy_published_at,
                    record_id=state.record_id,
                    source=state.source,
                )
            )
        entry: dict[str, Any] = {
            "purpose": purposes[purpose_id].key,
            "granted": states[""].is_granted,
        }
        services = {name: s.is_granted for name, s in states.items() if name}
        if services:
            entry["services"] = dict(sorted(services.items()))
        adopted.append(entry)
    db.session.flush()
    return sorted(adopted, key=lambda entry: entry["purpose"])


def target_site_purposes(subject: Subject):
    return db.session.get(Site, subject.site_id).purposes


def rotate_stored_identifiers() -> int:
    """Re-encrypt and re-hash every stored identifier with the current data key."""
    rotated = 0
    for subject in db.session.scalars(
        select(Subject).where(
            (Subject.email_encrypted.is_not(None)) | (Subject.user_id_encrypted.is_not(None))
        )
    ):
        changed = False
        for kind in ("email", "user_id"):
            blob = getattr(subject, f"{kind}_encrypted")
            if blob is not None and not identifiers.is_current(blob):
                set_identifier(subject, kind, identifiers.decrypt(blob))
                changed = True
        rotated += changed
    db.session.flush()
    return rotated
