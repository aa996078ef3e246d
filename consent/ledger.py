"""Recording: a submission of decisions, checked, appended to the chain, current state kept.

``record_submission`` (a visitor's, from the banner or the site's backend) and
``record_for_person`` (a known user's or email's) take the site's chain lock
themselves, record once even when the client retries, and hand the answer they store
for retries to the caller's ``answer`` function: the API dumps bodies and signs tokens,
the domain does not. Functions here flush but never commit: the request or CLI command
commits once, so a record and its current state land together or not at all.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from consent import chain, webhooks
from consent.chain import lock_chain
from consent.db import db
from consent.errors import InvalidRequest
from consent.idempotency import find_earlier_answer, remember_answer
from consent.models import ConsentRecord, CurrentState, Site, Subject, Visitor
from consent.sites import find_policy
from consent.visitors import subject_for_visitor

#: Turns what was recorded into the answer a client gets (and its retries get again).
Answer = Callable[[Visitor | None, ConsentRecord], dict[str, Any]]


class Recorded(NamedTuple):
    """The answer to a submission, and whether it is an earlier answer replayed."""

    answer: dict[str, Any]
    is_replay: bool


def is_advertising(purpose) -> bool:
    """Whether Global Privacy Control opts a purpose out: it sells or shares for ads."""
    return purpose.key == "marketing" or any(
        signal.startswith("ad_") for signal in purpose.consent_mode or []
    )


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
        if decision["granted"] and purpose is not None and is_advertising(purpose):
            raise InvalidRequest(
                "decisions",
                f"Global Privacy Control is on: {purpose.key!r} can be granted only as "
                "an explicit choice in the preference centre (source 'preferences').",
            )


def validate_decisions(site: Site, decisions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Check decisions against the site's purposes; return them in canonical form."""
    purposes = {purpose.key: purpose for purpose in site.purposes}
    seen: set[str] = set()
    canonical = []
    for index, decision in enumerate(decisions):
        field = f"decisions.{index}"
        key = decision["purpose"]
        purpose = purposes.get(key)
        if purpose is None:
            raise InvalidRequest(f"{field}.purpose", f"Unknown purpose {key!r} for this site.")
        if key in seen:
            raise InvalidRequest(f"{field}.purpose", f"Purpose {key!r} is given twice.")
        seen.add(key)
        granted = decision["granted"]
        if purpose.is_required and not granted:
            raise InvalidRequest(f"{field}.granted", f"{key!r} is required and cannot be refused.")
        services = decision.get("services") or {}
        for service, service_granted in services.items():
            if service not in purpose.service_keys:
                raise InvalidRequest(
                    f"{field}.services", f"Unknown service {service!r} in purpose {key!r}."
                )
            if service_granted and not granted:
                raise InvalidRequest(
                    f"{field}.services",
                    f"Service {service!r} cannot be granted while {key!r} is refused.",
                )
        entry: dict[str, Any] = {"purpose": key, "granted": bool(granted)}
        if services:
            entry["services"] = {name: bool(value) for name, value in sorted(services.items())}
        canonical.append(entry)
    if not canonical:
        raise InvalidRequest("decisions", "At least one decision is needed.")
    return sorted(canonical, key=lambda entry: entry["purpose"])


def record_decision(
    site: Site,
    subject: Subject,
    decisions: list[dict[str, Any]],
    *,
    source: str,
    policy_version: str | None = None,
    config_hash: str | None = None,
    language: str | None = None,
    is_gpc: bool = False,
    ip_truncated: str | None = None,
) -> ConsentRecord:
    """Record one submission of decisions and bring current state up to date."""
    canonical = validate_decisions(site, decisions)
    policy = find_policy(site, policy_version)
    purposes = {purpose.key: purpose for purpose in site.purposes}
    decided_ids = [purposes[decision["purpose"]].id for decision in canonical]
    # From here to the commit, the site's appends queue: the current state read next
    # must be the one the previous append left (a withdrawal depends on it).
    lock_chain(site)
    existing = {
        (state.purpose_id, state.service): state
        for state in db.session.scalars(
            select(CurrentState).where(
                CurrentState.subject_id == subject.id, CurrentState.purpose_id.in_(decided_ids)
            )
        )
    }
    record = chain.append_record(
        site,
        subject,
        event="decision",
        source=source,
        decisions=canonical,
        policy_version=policy,
        config_hash=config_hash,
        language=language,
        is_gpc=is_gpc,
        ip_truncated=ip_truncated,
    )
    expires_at = record.recorded_at + timedelta(days=site.lifetime_days)
    wanted: set[tuple[int, str]] = set()
    withdrawn: list[str] = []
    for decision in canonical:
        purpose = purposes[decision["purpose"]]
        entries = [("", decision["granted"])] + list(decision.get("services", {}).items())
        for service, is_granted in entries:
            wanted.add((purpose.id, service))
            state = existing.get((purpose.id, service))
            if state is None:
                state = CurrentState(
                    subject_id=subject.id,
                    purpose_id=purpose.id,
                    service=service,
                    is_granted=False,
                    is_withdrawal=False,
                )
                db.session.add(state)
            if service == "" and state.is_granted and not is_granted:
                withdrawn.append(purpose.key)
            # A refusal that replaces a grant is a withdrawal, and stays one until a grant.
            state.is_withdrawal = not is_granted and (state.is_granted or state.is_withdrawal)
            state.is_granted = is_granted
            state.decided_at = record.recorded_at
            state.expires_at = expires_at
            state.policy_published_at = policy.published_at if policy else None
            state.record_id = record.id
            state.source = record.source
    # A decision for the whole purpose replaces earlier per-service choices it omits.
    for key, state in existing.items():
        if key not in wanted:
            db.session.delete(state)
    db.session.flush()
    webhooks.emit_decision_events(site, subject, record, withdrawn)
    return record


def record_submission(
    site: Site,
    visitor_id: str | None,
    args: dict[str, Any],
    *,
    answer: Answer,
    idempotency_key: str | None,
    is_gpc: bool,
    ip_truncated: str | None,
) -> Recorded:
    """Record a visitor's submission once, even when the client retries it.

    The site's chain is locked from reading the subject to the commit; for a first-time
    visitor (a subject nobody else can know yet) only from reading its current state
    (``record_decision``), so one site's new visitors overlap until then.
    """

    def record() -> tuple[Visitor, ConsentRecord]:
        if is_gpc:
            refuse_advertising_without_explicit_choice(site, args["decisions"], args["source"])
        if visitor_id is not None:
            # A returning visitor's subject may be erased or decide meanwhile: read it locked.
            lock_chain(site)
        visitor, _ = subject_for_visitor(site, visitor_id)
        recorded = record_decision(
            site,
            visitor.subject,
            args["decisions"],
            source=args["source"],
            policy_version=args.get("policy_version"),
            config_hash=args.get("config_hash"),
            language=args.get("language"),
            is_gpc=is_gpc,
            ip_truncated=ip_truncated,
        )
        visitor.last_seen_at = recorded.recorded_at  # retention forgets unseen visitors
        return visitor, recorded

    return _record_once(site, idempotency_key, [visitor_id, args], record, answer)


def record_for_person(
    site: Site,
    subject_of: Callable[[], Subject],
    args: dict[str, Any],
    *,
    answer: Answer,
    idempotency_key: str | None,
) -> Recorded:
    """Record decisions for a person the site knows by user id or email, once per key.

    ``subject_of`` finds or creates the person; it runs under the site's chain lock.
    """
    lock_chain(site)
    subject = subject_of()
    # The digest names the person by pseudonym: no email or user id is kept with it.
    decisions = {key: value for key, value in args.items() if key not in ("user_id", "email")}

    def record() -> tuple[None, ConsentRecord]:
        return None, record_decision(
            site,
            subject,
            args["decisions"],
            source=args["source"],
            policy_version=args.get("policy_version"),
            config_hash=args.get("config_hash"),
            language=args.get("language"),
        )

    return _record_once(site, idempotency_key, [subject.pseudonym, decisions], record, answer)


def _record_once(
    site: Site,
    idempotency_key: str | None,
    request: Any,
    record: Callable[[], tuple[Visitor | None, ConsentRecord]],
    answer: Answer,
) -> Recorded:
    """Replay the answer to an earlier request with this key, or record and remember.

    Two concurrent retries with one key can both get as far as recording; the stored
    answer's unique key lets only the first commit, and the second, rolled back whole,
    replays the first one's answer.
    """
    request_digest, earlier = find_earlier_answer(site, idempotency_key, request)
    if earlier is not None:
        return Recorded(earlier, True)
    response = answer(*record())
    try:
        remember_answer(site, idempotency_key, request_digest, response)
    except IntegrityError:
        # PostgreSQL made this insert wait for the concurrent retry that committed first:
        # nothing of this attempt stays, the first answer is the answer.
        db.session.rollback()
        _, earlier = find_earlier_answer(site, idempotency_key, request)
        if earlier is None:
            raise
        return Recorded(earlier, True)
    return Recorded(response, False)
