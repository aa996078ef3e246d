"""Before every send: who may be contacted, the suppression list, one-click unsubscribe."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import any_, bindparam, select
from sqlalchemy.dialects.postgresql import ARRAY

from consent import identifiers, regions, webhooks
from consent.accesslog import log_access
from consent.chain import lock_chain
from consent.check import describe_state
from consent.db import db, now_utc
from consent.decision import Reason, Verdict, decide
from consent.errors import InvalidRequest
from consent.ledger import record_decision
from consent.links import public_url
from consent.models import CurrentState, ErasedIdentifier, Purpose, Site, Subject
from consent.sites import get_site_by_key, latest_material_policy
from consent.subjects import find_or_create_subject_by
from consent.tokens import make_unsubscribe_token, read_unsubscribe_token

MAX_BULK = 10_000
#: Rows per IN (...) query: well under SQLite's and PostgreSQL's parameter limits.
CHUNK = 2_000


def purpose_of(site: Site, purpose_key: str) -> Purpose:
    purpose = next((p for p in site.purposes if p.key == purpose_key), None)
    if purpose is None:
        raise InvalidRequest("purpose", f"Unknown purpose {purpose_key!r} for this site.")
    return purpose


def _batches(column, values: list) -> Iterator:
    """``column`` among ``values``, as few conditions as the database allows.

    PostgreSQL takes the whole list as one array parameter (``= ANY``), one statement
    with nothing to expand or parse per value; SQLite an ``IN (...)`` per ``CHUNK``.
    """
    if db.session.get_bind().dialect.name == "postgresql":
        if values:
            yield column == any_(bindparam(None, values, type_=ARRAY(column.type)))
        return
    for start in range(0, len(values), CHUNK):
        yield column.in_(values[start : start + CHUNK])


def bulk_check(
    site: Site,
    purpose_key: str,
    kind: str,
    values: list[str],
    actor: str,
    *,
    region: str | None = None,
) -> list[dict]:
    """Answer, for each email or user id, whether it may be contacted for a purpose.

    Everyone without a recorded, current, explicit opt-in may not, unless the site's
    rule for ``region`` (everyone's, here) is an opt-out one for this purpose. Invalid entries
    answer ``invalid`` rather than failing the whole list. A handful of queries for
    the whole list, whatever its length. The check is written to the access log.
    """
    purpose = purpose_of(site, purpose_key)
    log_access(
        site,
        actor,
        "bulk_check",
        details={"purpose": purpose.key, "by": kind, "count": len(values)},
    )
    normalise = identifiers.normalise_email if kind == "email" else identifiers.normalise_user_id
    keys = identifiers.keyring()
    column = Subject.email_digest if kind == "email" else Subject.user_id_digest
    digests_of: dict[int, list[str]] = {}
    for index, value in enumerate(values):
        try:
            normalised = normalise(value)
        except InvalidRequest:
            continue
        digests_of[index] = [
            identifiers.digest_with_key(key, kind, site.id, normalised) for key in keys
        ]
    every_digest = [d for digests in digests_of.values() for d in digests]

    # Rows of the few columns needed, not entities: 10,000 ORM objects cost more than
    # the queries (bench/bulk_check.py).
    subject_ids_by_digest: dict[str, int] = {}
    erased: set[str] = set()
    for among in _batches(column, every_digest):
        subject_ids_by_digest.update(
            db.session.execute(
                select(column, Subject.id).where(Subject.site_id == site.id, among)
            ).all()
        )
    for among in _batches(ErasedIdentifier.digest, every_digest):
        erased.update(
            db.session.scalars(
                select(ErasedIdentifier.digest).where(ErasedIdentifier.site_id == site.id, among)
            )
        )
    states = {}
    for among in _batches(CurrentState.subject_id, list(subject_ids_by_digest.values())):
        for state in db.session.execute(
            select(
                CurrentState.subject_id,
                CurrentState.is_granted,
                CurrentState.is_withdrawal,
                CurrentState.decided_at,
                CurrentState.expires_at,
                CurrentState.policy_published_at,
            ).where(
                among,
                CurrentState.purpose_id == purpose.id,
                CurrentState.service == "",
            )
        ):
            states[state.subject_id] = state

    material = latest_material_policy(site)
    material_published_at = material.published_at if material else None
    now = now_utc()
    is_default_allowed = regions.purpose_default(
        purpose, regions.mode_for(site.region_rules, region), is_gpc=False
    )
    results = []
    for index, value in enumerate(values):
        if index not in digests_of:
            verdict = Verdict(False, Reason.INVALID)
        else:
            subject_id = next(
                (subject_ids_by_digest[d] for d in digests_of[index] if d in subject_ids_by_digest),
                None,
            )
            verdict = decide(
                is_known=True,
                is_required=purpose.is_required,
                is_erased=subject_id is None and bool(erased.intersection(digests_of[index])),
                purpose_state=states.get(subject_id),
                lifetime_days=site.lifetime_days,
                material_published_at=material_published_at,
                now=now,
                is_default_allowed=is_default_allowed,
            )
        results.append({kind: value, "allowed": verdict.allowed, "reason": verdict.reason})
    return results


def log_suppression_read(site: Site, purpose_key: str, actor: str, query: dict) -> None:
    """Write a read of the suppression list (decrypted identifiers) to the access log."""
    purpose = purpose_of(site, purpose_key)
    log_access(
        site,
        actor,
        "suppression",
        details={
            "purpose": purpose.key,
            "format": query.get("format", "json"),
            "after": query.get("after", 0),
        },
    )


@dataclass
class SuppressionRow:
    subject_id: int
    email: str | None
    user_id: str | None
    reason: str
    decided_at: Any


def suppression_rows(site: Site, purpose_key: str, *, after: int = 0) -> Iterator[SuppressionRow]:
    """Everyone known by email or user id who must not be contacted for the purpose.

    Ordered by subject id so a client can page with ``after``. Erased people are not
    listed (nothing identifies them any more); the bulk check still answers ``erased``
    for their address.
    """
    purpose = purpose_of(site, purpose_key)
    material = latest_material_policy(site)
    material_published_at = material.published_at if material else None
    now = now_utc()
    last_id = after
    while True:
        batch = db.session.execute(
            select(Subject, CurrentState)
            .outerjoin(
                CurrentState,
                (CurrentState.subject_id == Subject.id)
                & (CurrentState.purpose_id == purpose.id)
                & (CurrentState.service == ""),
            )
            .where(
                Subject.site_id == site.id,
                Subject.id > last_id,
                Subject.erased_at.is_(None),
                (Subject.email_digest.is_not(None)) | (Subject.user_id_digest.is_not(None)),
            )
            .order_by(Subject.id)
            .limit(CHUNK)
        ).all()
        for subject, state in batch:
            verdict = decide(
                is_known=True,
                is_required=purpose.is_required,
                is_erased=False,
                purpose_state=state,
                lifetime_days=site.lifetime_days,
                material_published_at=material_published_at,
                now=now,
            )
            if not verdict.allowed:
                yield SuppressionRow(
                    subject.id,
                    identifiers.decrypt(subject.email_encrypted)
                    if subject.email_encrypted
                    else None,
                    identifiers.decrypt(subject.user_id_encrypted)
                    if subject.user_id_encrypted
                    else None,
                    verdict.reason,
                    verdict.decided_at,
                )
        if len(batch) < CHUNK:
            return
        last_id = batch[-1][0].id


def unsubscribe_links(site: Site, purpose_key: str, emails: list[str]) -> list[dict[str, Any]]:
    """A signed one-click unsubscribe link (and the mail headers) for each email."""
    purpose = purpose_of(site, purpose_key)
    if purpose.is_required:
        raise InvalidRequest("purpose", "A required purpose cannot be unsubscribed from.")
    links = []
    for index, email in enumerate(emails):
        try:
            subject = find_or_create_subject_by(site, "email", email)
        except InvalidRequest:
            raise InvalidRequest(f"emails.{index}", "Not a valid email address.") from None
        token = make_unsubscribe_token(site.key, subject.pseudonym, purpose.key)
        url = public_url("unsubscribe.unsubscribe", token=token)
        links.append(
            {
                "email": email,
                "url": url,
                "headers": {
                    "List-Unsubscribe": f"<{url}>",
                    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                },
            }
        )
    return links


@dataclass(frozen=True)
class MailboxLink:
    """Whom a signed unsubscribe link speaks for: a site's subject, reached by email.

    Holding the link proves control of the mailbox it was sent to, so it may change that
    subject's email subscriptions, re-subscriptions included.
    """

    site: Site
    subject: Subject
    #: The purpose whose email carried the link (what one click unsubscribes from).
    purpose: Purpose

    @property
    def purposes(self) -> list[Purpose]:
        """What the preference centre offers: every optional email purpose, and the link's."""
        return [
            purpose
            for purpose in self.site.purposes
            if not purpose.is_required
            and (purpose.kind == "communication" or purpose.id == self.purpose.id)
        ]


def open_unsubscribe_link(token: str) -> MailboxLink | None:
    """Whom an unsubscribe link is for; None if we did not sign it, or its site, subject
    or (optional) purpose is gone, or the subject was erased."""
    parsed = read_unsubscribe_token(token)
    if parsed is None:
        return None
    site_key, pseudonym, purpose_key = parsed
    site = get_site_by_key(site_key)
    if site is None:
        return None
    subject = db.session.scalars(
        select(Subject).where(Subject.site_id == site.id, Subject.pseudonym == pseudonym)
    ).first()
    purpose = next((p for p in site.purposes if p.key == purpose_key), None)
    if subject is None or subject.erased_at is not None or purpose is None or purpose.is_required:
        return None
    return MailboxLink(site, subject, purpose)


def email_subscriptions(link: MailboxLink) -> dict[str, bool]:
    """Whether the link's subject may be emailed, per offered purpose (the check's rule).

    Shown to whoever holds the link, so the reading is written to the access log.
    """
    log_access(link.site, "person", "preferences", link.subject.pseudonym)
    state = describe_state(link.site, link.subject)
    return {purpose.key: state[purpose.key]["allowed"] for purpose in link.purposes}


def change_subscriptions(
    link: MailboxLink, choices: dict[str, bool], *, language: str | None = None
) -> list[str]:
    """Record the chosen opt-outs and re-subscriptions, all in one record; return their keys.

    Only purposes the preference centre offers. A choice already in force records
    nothing: an opt-out of a purpose refused, a re-subscription to one allowed. The
    record's source is ``unsubscribe`` for opt-outs, ``preferences`` with a grant in it.
    """
    offered = {purpose.key for purpose in link.purposes}
    for key in choices:
        if key not in offered:
            raise InvalidRequest("purpose", f"{key!r} is not an email purpose of this site.")
    site, subject = link.site, link.subject
    lock_chain(site, subject)  # an erasure may have come first: read it under the lock
    if subject.erased_at is not None:
        return []
    state = describe_state(site, subject)
    in_force = {Reason.DENIED, Reason.WITHDRAWN}
    decisions = [
        {"purpose": key, "granted": granted}
        for key, granted in choices.items()
        if not (state[key]["allowed"] if granted else state[key]["reason"] in in_force)
    ]
    if not decisions:
        return []
    is_grant = any(decision["granted"] for decision in decisions)
    record = record_decision(
        site,
        subject,
        decisions,
        source="preferences" if is_grant else "unsubscribe",
        language=language,
    )
    for decision in decisions:
        if not decision["granted"]:
            webhooks.emit_event(
                site,
                "marketing.unsubscribed",
                {
                    "subject": subject.pseudonym,
                    "purpose": decision["purpose"],
                    "at": record.recorded_at.isoformat(),
                },
                subject=subject,
            )
    return [decision["purpose"] for decision in decisions]


def unsubscribe(token: str) -> bool:
    """Record the opt-out one click on a signed link asks for; False if the link is not ours.

    Unsubscribing again while already opted out records nothing new.
    """
    link = open_unsubscribe_link(token)
    if link is None:
        return False
    change_subscriptions(link, {link.purpose.key: False})
    return True
