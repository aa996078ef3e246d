"""Who a submission is about: visitors, subjects, their identifiers, and linking them."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from consent import identifiers, ledger, regions
from consent.db import db
from consent.errors import InvalidRequest
from consent.models import CurrentState, IdempotentRequest, Site, Subject, Visitor
from consent.schemas import RecordResultSchema
from consent.tokens import make_visitor_token

#: Schemas are costly to build and safe to share: one instance serves every request.
RECORD_RESULT = RecordResultSchema()


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
        subject = Subject(site_id=site.id, pseudonym=ledger.new_opaque_id())
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


def subject_for_visitor(site: Site, visitor_id: str | None) -> tuple[Visitor, bool]:
    """The visitor behind a token, or a new one; a new one too if theirs was erased.

    Returns the visitor and whether it was created by this call.
    """
    if visitor_id is not None:
        visitor = ledger.find_visitor(site, visitor_id)
        if visitor is not None and visitor.subject.erased_at is None:
            return visitor, False
    return ledger.create_visitor(site), True


def refuse_advertising_without_explicit_choice(
    site: Site, decisions: list[dict[str, Any]], source: str
) -> None:
    """Under Global Privacy Control, grant an advertising purpose only one by one.

    "Accept all" on the first layer never overrides the signal; a switch turned on in
    the preference centre (source ``preferences``) is the person's explicit choice.
    """
    if source == "preferences":
        return
    by_key = {purpose.key: purpose for purpose in site.purposes}
    for decision in decisions:
        purpose = by_key.get(decision["purpose"])
        if (
            decision["granted"]
            and purpose is not None
            and regions.is_advertising(purpose.key, purpose.consent_mode)
        ):
            raise InvalidRequest(
                "decisions",
                f"Global Privacy Control is on: {purpose.key!r} can be granted only as "
                "an explicit choice in the preference centre (source 'preferences').",
            )


def record_submission(
    site: Site,
    visitor_id: str | None,
    args: dict[str, Any],
    *,
    idempotency_key: str | None,
    is_gpc: bool,
    ip_truncated: str | None,
    region: str | None = None,
    mode: str | None = None,
) -> tuple[dict[str, Any], bool]:
    """Record a visitor's submission once, even when the client retries it.

    Returns the response body and whether it is a replay of an earlier answer.

    The site's chain is locked from reading the subject to the commit; for a first-time
    visitor (a subject nobody else can know yet) only from reading its current state
    (``record_decision``), so one site's new visitors overlap until then. Two
    concurrent retries with one key both get that far; the answer's unique key lets
    only the first commit, and the second, rolled back whole, replays its answer.
    """
    request = [visitor_id, args]
    request_digest, earlier = find_earlier_answer(site, idempotency_key, request)
    if earlier is not None:
        return earlier, True
    if is_gpc:
        refuse_advertising_without_explicit_choice(site, args["decisions"], args["source"])
    if visitor_id is not None:
        # A returning visitor's subject may be erased or decide meanwhile: read it locked.
        ledger.lock_chain_head(site)

    visitor, _ = subject_for_visitor(site, visitor_id)
    record = ledger.record_decision(
        site,
        visitor.subject,
        args["decisions"],
        source=args["source"],
        policy_version=args.get("policy_version"),
        config_hash=args.get("config_hash"),
        language=args.get("language"),
        is_gpc=is_gpc,
        ip_truncated=ip_truncated,
        region=region,
        mode=mode,
    )
    visitor.last_seen_at = record.recorded_at  # retention forgets visitors unseen too long
    response = RECORD_RESULT.dump(
        {
            "visitor_token": make_visitor_token(site.key, visitor.visitor_id),
            "visitor_id": visitor.visitor_id,
            "record": record,
        }
    )
    try:
        remember_answer(site, idempotency_key, request_digest, response)
    except IntegrityError:
        # A concurrent retry with this key committed first (PostgreSQL made this insert
        # wait for it): nothing of this attempt stays, the first answer is the answer.
        db.session.rollback()
        _, earlier = find_earlier_answer(site, idempotency_key, request)
        if earlier is None:
            raise
        return earlier, True
    return response, False


#: Shorter keys could be guessed, and a guessed key would replay someone else's answer.
MIN_KEY_LENGTH = 16


def idempotency_key_digest(idempotency_key: str) -> str:
    """Return what is stored of an ``Idempotency-Key``: its SHA-256, never the key."""
    return hashlib.sha256(idempotency_key.encode()).hexdigest()


def find_earlier_answer(
    site: Site, idempotency_key: str | None, request: Any
) -> tuple[str | None, dict[str, Any] | None]:
    """The request's digest and the answer given to an earlier request with this key.

    A concurrent retry may not see the first answer yet: ``remember_answer``'s unique
    key then decides which one stays. The same key with a different request is refused.
    """
    if idempotency_key is None:
        return None, None
    if not MIN_KEY_LENGTH <= len(idempotency_key) <= 200 or not idempotency_key.isprintable():
        raise InvalidRequest(
            "Idempotency-Key",
            f"Must be {MIN_KEY_LENGTH} to 200 printable characters: send a random one "
            "(a UUID) per submission.",
        )
    request_digest = hashlib.sha256(
        json.dumps(request, sort_keys=True, default=str).encode()
    ).hexdigest()
    earlier = db.session.scalars(
        select(IdempotentRequest).where(
            IdempotentRequest.site_id == site.id,
            IdempotentRequest.key == idempotency_key_digest(idempotency_key),
        )
    ).first()
    if earlier is None:
        return request_digest, None
    if earlier.request_digest != request_digest:
        raise InvalidRequest("Idempotency-Key", "This key was used for a different submission.")
    return request_digest, earlier.response


def remember_answer(
    site: Site, idempotency_key: str | None, request_digest: str | None, response: dict
) -> None:
    """Keep the answer to a request sent with an ``Idempotency-Key`` for its retries."""
    if idempotency_key is None:
        return
    db.session.add(
        IdempotentRequest(
            site_id=site.id,
            key=idempotency_key_digest(idempotency_key),
            request_digest=request_digest,
            response=response,
        )
    )
    db.session.flush()


def link_visitor(site: Site, visitor_id: str, user_id: str):
    """Make a visitor's consent follow the site's user across devices.

    The visitor joins the user's subject; per purpose, the newer of the two subjects'
    decisions wins. The link is itself appended to the history.
    """
    visitor = ledger.find_visitor(site, visitor_id)
    if visitor is None:
        raise InvalidRequest("visitor_token", "This visitor has no recorded decision yet.")
    previous = visitor.subject
    target = find_subject_by(site, "user_id", user_id)
    if target is None:
        if previous.user_id_digest is None and previous.erased_at is None:
            set_identifier(previous, "user_id", user_id)
            db.session.flush()
            record = ledger.append_record(
                site, previous, event="link", source="api", details={"linked": "user_id"}
            )
            return previous, record
        target = find_or_create_subject_by(site, "user_id", user_id)
    if target is previous:
        record = ledger.append_record(
            site, target, event="link", source="api", details={"linked": "user_id"}
        )
        return target, record
    adopted = _merge_states(previous, target)
    visitor.subject = target
    db.session.flush()
    record = ledger.append_record(
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
