"""The domain: append records to a site's hash chain, keep current state, check, verify.

Functions here flush but never commit: the request or CLI command that calls them
commits once, so a record and its current state land together or not at all.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import delete, select

from consent.db import db, now_utc
from consent.errors import InvalidRequest
from consent.models import (
    ChainCheckpoint,
    ChainHead,
    ConsentRecord,
    CurrentState,
    PolicyVersion,
    Purpose,
    Site,
    Subject,
    Visitor,
)

GENESIS_HASH = "0" * 64


def new_opaque_id() -> str:
    """Return a random, unguessable id for a visitor or a subject."""
    return secrets.token_urlsafe(18)


# --- the chain ---------------------------------------------------------------------


def canonical_record(record: ConsentRecord, site_key: str) -> bytes:
    """Serialise what a record's hash covers: every field but the hash, stable bytes."""
    fields = {
        "site": site_key,
        "sequence": record.sequence,
        "subject": record.subject_pseudonym,
        "event": record.event,
        "source": record.source,
        "decisions": record.decisions,
        "details": record.details,
        "policy_version": record.policy_version,
        "config_hash": record.config_hash,
        "language": record.language,
        "gpc": record.is_gpc,
        "ip": record.ip_truncated,
        "recorded_at": record.recorded_at.isoformat(timespec="microseconds"),
        "previous_hash": record.previous_hash,
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def hash_record(record: ConsentRecord, site_key: str) -> str:
    return hashlib.sha256(canonical_record(record, site_key)).hexdigest()


def start_chain(site: Site) -> None:
    """Give a new site the head of an empty chain."""
    db.session.add(ChainHead(site_id=site.id, sequence=0, record_hash=GENESIS_HASH))


def lock_chain_head(site: Site) -> ChainHead:
    """Lock the site's chain head row until commit so appends queue per site.

    On PostgreSQL this is ``SELECT ... FOR UPDATE``; on SQLite the write transaction
    (``BEGIN IMMEDIATE``, see ``consent.db``) already serialises every writer.
    """
    head = db.session.execute(
        select(ChainHead)
        .where(ChainHead.site_id == site.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()
    return head


def append_record(
    site: Site,
    subject: Subject | None,
    *,
    event: str,
    source: str,
    decisions: list[dict[str, Any]] | None = None,
    details: dict[str, Any] | None = None,
    policy_version: PolicyVersion | None = None,
    config_hash: str | None = None,
    language: str | None = None,
    is_gpc: bool = False,
    ip_truncated: str | None = None,
) -> ConsentRecord:
    """Append one record to the site's chain; the caller holds or takes the head lock.

    ``subject`` is None for the service's own events (a retention purge).
    """
    head = lock_chain_head(site)
    record = ConsentRecord(
        site_id=site.id,
        sequence=head.sequence + 1,
        subject_pseudonym=subject.pseudonym if subject else "",
        event=event,
        source=source,
        decisions=decisions or [],
        details=details or {},
        policy_version=policy_version.version if policy_version else None,
        config_hash=config_hash,
        language=language,
        is_gpc=is_gpc,
        ip_truncated=ip_truncated,
        recorded_at=now_utc(),
        previous_hash=head.record_hash,
    )
    record.record_hash = hash_record(record, site.key)
    db.session.add(record)
    head.sequence = record.sequence
    head.record_hash = record.record_hash
    db.session.flush()
    return record


@dataclass
class ChainReport:
    """What ``verify_chain`` found."""

    site_key: str
    records_checked: int
    is_intact: bool
    #: The sequence number of the first record that does not match, if any.
    first_bad_sequence: int | None = None
    first_bad_record_id: int | None = None
    problem: str | None = None


def _records_in_order(site: Site, after: int = 0, batch_size: int = 1000):
    """Yield a site's records by sequence, a batch at a time (keyset pagination)."""
    last_sequence = after
    while True:
        batch = db.session.scalars(
            select(ConsentRecord)
            .where(ConsentRecord.site_id == site.id, ConsentRecord.sequence > last_sequence)
            .order_by(ConsentRecord.sequence)
            .limit(batch_size)
        ).all()
        yield from batch
        if len(batch) < batch_size:
            return
        last_sequence = batch[-1].sequence
        for record in batch:  # keep memory flat on long chains
            db.session.expunge(record)


def sign_checkpoint(site_key: str, sequence: int, record_hash: str, purged_at: datetime) -> str:
    """HMAC a checkpoint with the app's secret: database access alone cannot forge one."""
    message = f"{site_key}\x00{sequence}\x00{record_hash}\x00{purged_at.isoformat()}".encode()
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, b"checkpoint\x00" + message, hashlib.sha256).hexdigest()


def latest_checkpoint(site: Site) -> ChainCheckpoint | None:
    """The retention checkpoint the chain now starts from, if any purge happened."""
    return db.session.scalars(
        select(ChainCheckpoint)
        .where(ChainCheckpoint.site_id == site.id)
        .order_by(ChainCheckpoint.sequence.desc())
        .limit(1)
    ).first()


def verify_chain(site: Site) -> ChainReport:
    """Walk the site's chain in order and name the first record that does not match.

    After a retention purge the walk starts at the latest checkpoint, whose signature
    must be valid.
    """
    expected_previous = GENESIS_HASH
    expected_sequence = 1
    count = 0
    checkpoint = latest_checkpoint(site)
    if checkpoint is not None:
        signature = sign_checkpoint(
            site.key, checkpoint.sequence, checkpoint.record_hash, checkpoint.purged_at
        )
        if not hmac.compare_digest(signature, checkpoint.signature):
            return ChainReport(
                site.key, 0, False, checkpoint.sequence, None,
                "the retention checkpoint's signature is invalid: it was not made by purge",
            )
        expected_previous = checkpoint.record_hash
        expected_sequence = checkpoint.sequence + 1
    for record in _records_in_order(site, after=expected_sequence - 1):
        problem = None
        if record.sequence != expected_sequence:
            problem = f"expected sequence {expected_sequence}, found {record.sequence}"
        elif record.previous_hash != expected_previous:
            problem = "previous_hash does not match the record before it"
        elif hash_record(record, site.key) != record.record_hash:
            problem = "content does not match its hash"
        if problem:
            return ChainReport(site.key, count, False, expected_sequence, record.id, problem)
        count += 1
        expected_previous = record.record_hash
        expected_sequence += 1
    head = db.session.get(ChainHead, site.id)
    if head is not None and (head.sequence, head.record_hash) != (
        expected_sequence - 1,
        expected_previous,
    ):
        return ChainReport(
            site.key,
            count,
            False,
            expected_sequence if head.sequence >= expected_sequence else head.sequence,
            None,
            f"the chain head says {head.sequence} records, but the chain ends at "
            f"{expected_sequence - 1}: records were removed from the end",
        )
    return ChainReport(site.key, count, True)


# --- subjects ------------------------------------------------------------------------


def create_visitor(site: Site, subject: Subject | None = None) -> Visitor:
    """Issue a new visitor id, for a new subject unless one is given."""
    if subject is None:
        subject = Subject(site_id=site.id, pseudonym=new_opaque_id())
        db.session.add(subject)
        db.session.flush()
    visitor = Visitor(visitor_id=new_opaque_id(), site_id=site.id, subject=subject)
    db.session.add(visitor)
    db.session.flush()
    return visitor


def find_visitor(site: Site, visitor_id: str) -> Visitor | None:
    visitor = db.session.get(Visitor, visitor_id)
    return visitor if visitor is not None and visitor.site_id == site.id else None


# --- decisions -----------------------------------------------------------------------


def latest_policy(site: Site) -> PolicyVersion | None:
    return db.session.scalars(
        select(PolicyVersion)
        .where(PolicyVersion.site_id == site.id)
        .order_by(PolicyVersion.published_at.desc(), PolicyVersion.id.desc())
        .limit(1)
    ).first()


def latest_material_policy(site: Site) -> PolicyVersion | None:
    return db.session.scalars(
        select(PolicyVersion)
        .where(PolicyVersion.site_id == site.id, PolicyVersion.is_material.is_(True))
        .order_by(PolicyVersion.published_at.desc(), PolicyVersion.id.desc())
        .limit(1)
    ).first()


def find_policy(site: Site, version: str | None) -> PolicyVersion | None:
    """Return the named version (422 if unknown) or, without a name, the latest."""
    if version is None:
        return latest_policy(site)
    policy = db.session.scalars(
        select(PolicyVersion).where(
            PolicyVersion.site_id == site.id, PolicyVersion.version == version
        )
    ).first()
    if policy is None:
        raise InvalidRequest("policy_version", f"Unknown policy version {version!r}.")
    return policy


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
    record = append_record(
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
    purposes = {purpose.key: purpose for purpose in site.purposes}
    expires_at = record.recorded_at + timedelta(days=site.lifetime_days)
    for decision in canonical:
        purpose = purposes[decision["purpose"]]
        # A decision for the whole purpose replaces any earlier per-service choice.
        db.session.execute(
            delete(CurrentState).where(
                CurrentState.subject_id == subject.id,
                CurrentState.purpose_id == purpose.id,
                CurrentState.service != "",
            )
        )
        entries = [("", decision["granted"])] + list(decision.get("services", {}).items())
        for service, granted in entries:
            _set_state(
                subject,
                purpose,
                service,
                granted,
                decided_at=record.recorded_at,
                expires_at=expires_at,
                policy_published_at=policy.published_at if policy else None,
                record=record,
            )
    db.session.flush()
    return record


def _set_state(
    subject: Subject,
    purpose: Purpose,
    service: str,
    is_granted: bool,
    *,
    decided_at: datetime,
    expires_at: datetime,
    policy_published_at: datetime | None,
    record: ConsentRecord,
) -> None:
    state = db.session.get(CurrentState, (subject.id, purpose.id, service))
    if state is None:
        state = CurrentState(subject_id=subject.id, purpose_id=purpose.id, service=service)
        previous_granted = previous_withdrawal = False
        db.session.add(state)
    else:
        previous_granted, previous_withdrawal = state.is_granted, state.is_withdrawal
    state.is_granted = is_granted
    state.is_withdrawal = not is_granted and (previous_granted or previous_withdrawal)
    state.decided_at = decided_at
    state.expires_at = expires_at
    state.policy_published_at = policy_published_at
    state.record_id = record.id
    state.source = record.source


# --- the check -----------------------------------------------------------------------


@dataclass
class Verdict:
    """The answer to "may I?" for one purpose (and optionally one service)."""

    allowed: bool
    reason: str
    decided_at: datetime | None = None
    expires_at: datetime | None = None


def check_purpose(
    site: Site,
    subject: Subject | None,
    purpose_key: str,
    service: str | None = None,
    *,
    now: datetime | None = None,
) -> Verdict:
    """Decide whether a purpose (or one of its services) is allowed; fail closed."""
    purpose = next((p for p in site.purposes if p.key == purpose_key), None)
    if purpose is None or (service is not None and service not in purpose.service_keys):
        return Verdict(False, "unknown_purpose")
    if purpose.is_required:
        return Verdict(True, "required")
    if subject is None:
        return Verdict(False, "no_decision")
    if subject.erased_at is not None:
        return Verdict(False, "erased")
    states = {
        state.service: state
        for state in db.session.scalars(
            select(CurrentState).where(
                CurrentState.subject_id == subject.id,
                CurrentState.purpose_id == purpose.id,
                CurrentState.service.in_(["", service or ""]),
            )
        )
    }
    return judge_state(
        site,
        states.get(""),
        states.get(service) if service else None,
        latest_material_policy(site),
        now or now_utc(),
    )


def judge_state(
    site: Site,
    purpose_state: CurrentState | None,
    service_state: CurrentState | None,
    material_policy: PolicyVersion | None,
    now: datetime,
) -> Verdict:
    """Turn stored state into a verdict: expiry, staleness and refusals all deny."""
    if purpose_state is None:
        return Verdict(False, "no_decision")
    state = service_state or purpose_state
    decided_at = state.decided_at
    expires_at = min(state.expires_at, decided_at + timedelta(days=site.lifetime_days))
    if now >= expires_at:
        return Verdict(False, "expired", decided_at, expires_at)
    if material_policy is not None and (
        state.policy_published_at is None
        or state.policy_published_at < material_policy.published_at
    ):
        return Verdict(False, "stale_policy", decided_at, expires_at)
    for each in (purpose_state, service_state):
        if each is not None and not each.is_granted:
            reason = "withdrawn" if each.is_withdrawal else "denied"
            return Verdict(False, reason, each.decided_at, expires_at)
    return Verdict(True, "granted", decided_at, expires_at)


def describe_state(site: Site, subject: Subject, *, now: datetime | None = None) -> dict:
    """Every purpose's verdict for a subject, with per-service verdicts where decided."""
    now = now or now_utc()
    material = latest_material_policy(site)
    states: dict[int, dict[str, CurrentState]] = {}
    for state in db.session.scalars(
        select(CurrentState).where(CurrentState.subject_id == subject.id)
    ):
        states.setdefault(state.purpose_id, {})[state.service] = state
    described = {}
    for purpose in site.purposes:
        mine = states.get(purpose.id, {})
        if purpose.is_required:
            verdict = Verdict(True, "required")
        elif subject.erased_at is not None:
            verdict = Verdict(False, "erased")
        else:
            verdict = judge_state(site, mine.get(""), None, material, now)
        services = {}
        for service in sorted(purpose.service_keys):
            if service in mine and subject.erased_at is None and not purpose.is_required:
                service_verdict = judge_state(site, mine.get(""), mine[service], material, now)
            else:
                service_verdict = verdict
            services[service] = {
                "allowed": service_verdict.allowed,
                "purpose": purpose.key,
                "service": service,
                "reason": service_verdict.reason,
                "decided_at": service_verdict.decided_at,
                "expires_at": service_verdict.expires_at,
            }
        described[purpose.key] = {
            "allowed": verdict.allowed,
            "reason": verdict.reason,
            "decided_at": verdict.decided_at,
            "expires_at": verdict.expires_at,
            "services": services,
        }
    return described
