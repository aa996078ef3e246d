"""The domain: append records to a site's hash chain, keep current state, check, verify.

Functions here flush but never commit: the request or CLI command that calls them
commits once, so a record and its current state land together or not at all.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import secrets
from collections import namedtuple
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import bindparam, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, joinedload

from consent import regions, webhooks
from consent.db import UTCDateTime, db, now_utc
from consent.decision import Verdict, decide
from consent.errors import InvalidRequest
from consent.models import (
    AccessLogHead,
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
#: Session.info key: chain heads locked by the current transaction.
LOCKED_HEADS = "consent.locked_chain_heads"


@event.listens_for(Session, "after_transaction_end")
def _forget_locks(session: Session, transaction) -> None:
    """Locks end with the transaction; so does our note of them."""
    if transaction.parent is None:
        session.info.pop(LOCKED_HEADS, None)


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
    # Only where set: records written before regions existed keep their hashes.
    for name in ("region", "mode"):
        if getattr(record, name) is not None:
            fields[name] = getattr(record, name)
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def hash_record(record: ConsentRecord, site_key: str) -> str:
    return hashlib.sha256(canonical_record(record, site_key)).hexdigest()


def start_chain(site: Site) -> None:
    """Give a new site the heads of an empty chain and an empty access log."""
    db.session.add(ChainHead(site_id=site.id, sequence=0, record_hash=GENESIS_HASH))
    db.session.add(AccessLogHead(site_id=site.id, sequence=0, entry_hash=GENESIS_HASH))


def lock_chain_head(site: Site) -> ChainHead:
    """Lock the site's chain head row until commit so appends queue per site.

    On PostgreSQL this is ``SELECT ... FOR UPDATE``; on SQLite the write transaction
    (``BEGIN IMMEDIATE``, see ``consent.db``) already serialises every writer. Within
    one transaction the lock is taken once; later calls reuse the locked row.
    """
    locked = db.session.info.setdefault(LOCKED_HEADS, {})
    if site.id in locked:
        return locked[site.id]
    head = db.session.execute(
        select(ChainHead)
        .where(ChainHead.site_id == site.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()
    locked[site.id] = head
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
    region: str | None = None,
    mode: str | None = None,
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
        region=region,
        mode=mode,
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
    checkpoint = latest_checkpoint(site)
    if checkpoint is not None:
        signature = sign_checkpoint(
            site.key, checkpoint.sequence, checkpoint.record_hash, checkpoint.purged_at
        )
        if not hmac.compare_digest(signature, checkpoint.signature):
            return ChainReport(
                site.key,
                0,
                False,
                checkpoint.sequence,
                None,
                "the retention checkpoint's signature is invalid: it was not made by purge",
            )
        expected_previous = checkpoint.record_hash
        expected_sequence = checkpoint.sequence + 1
    return walk_links(
        site.key,
        _records_in_order(site, after=expected_sequence - 1),
        hash_of=lambda record: hash_record(record, site.key),
        hash_attribute="record_hash",
        expected_previous=expected_previous,
        expected_sequence=expected_sequence,
        head=db.session.get(ChainHead, site.id),
        names=("sequence", "record", "the chain head", "records", "the chain"),
    )


def walk_links(
    site_key: str,
    links,
    *,
    hash_of,
    hash_attribute: str,
    expected_previous: str,
    expected_sequence: int,
    head,
    names: tuple[str, str, str, str, str],
) -> ChainReport:
    """Walk hash-chained rows in sequence order (the history, the access log) from where
    the walk starts, and check the head agrees: name the first row that does not match.

    ``names`` words the problems: (sequence, row, head, rows, chain).
    """
    sequence_word, row_word, head_word, rows_word, chain_word = names
    count = 0
    for link in links:
        problem = None
        if link.sequence != expected_sequence:
            problem = f"expected {sequence_word} {expected_sequence}, found {link.sequence}"
        elif link.previous_hash != expected_previous:
            problem = f"previous_hash does not match the {row_word} before it"
        elif hash_of(link) != getattr(link, hash_attribute):
            problem = "content does not match its hash"
        if problem:
            return ChainReport(site_key, count, False, expected_sequence, link.id, problem)
        count += 1
        expected_previous = getattr(link, hash_attribute)
        expected_sequence += 1
    if head is not None and (head.sequence, getattr(head, hash_attribute)) != (
        expected_sequence - 1,
        expected_previous,
    ):
        return ChainReport(
            site_key,
            count,
            False,
            expected_sequence if head.sequence >= expected_sequence else head.sequence,
            None,
            f"{head_word} says {head.sequence} {rows_word}, but {chain_word} ends at "
            f"{expected_sequence - 1}: {rows_word} were removed from the end",
        )
    return ChainReport(site_key, count, True)


# --- subjects ------------------------------------------------------------------------


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


# --- decisions -----------------------------------------------------------------------


def latest_policy(site: Site, *, now: datetime | None = None) -> PolicyVersion | None:
    """Return the version in effect now (a scheduled one counts from its time)."""
    return db.session.scalars(
        select(PolicyVersion)
        .where(PolicyVersion.site_id == site.id, PolicyVersion.published_at <= (now or now_utc()))
        .order_by(PolicyVersion.published_at.desc(), PolicyVersion.id.desc())
        .limit(1)
    ).first()


def latest_material_policy(site: Site, *, now: datetime | None = None) -> PolicyVersion | None:
    """Return the latest material version in effect now: decisions before it are stale."""
    return db.session.scalars(
        select(PolicyVersion)
        .where(
            PolicyVersion.site_id == site.id,
            PolicyVersion.is_material.is_(True),
            PolicyVersion.published_at <= (now or now_utc()),
        )
        .order_by(PolicyVersion.published_at.desc(), PolicyVersion.id.desc())
        .limit(1)
    ).first()


def scheduled_policies(site: Site, *, now: datetime | None = None) -> list[PolicyVersion]:
    """Return the versions published ahead of time, soonest first."""
    return list(
        db.session.scalars(
            select(PolicyVersion)
            .where(
                PolicyVersion.site_id == site.id, PolicyVersion.published_at > (now or now_utc())
            )
            .order_by(PolicyVersion.published_at, PolicyVersion.id)
        )
    )


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
    region: str | None = None,
    mode: str | None = None,
) -> ConsentRecord:
    """Record one submission of decisions and bring current state up to date.

    ``region`` and ``mode``: where the visitor was and the site's rule there.
    """
    canonical = validate_decisions(site, decisions)
    policy = find_policy(site, policy_version)
    purposes = {purpose.key: purpose for purpose in site.purposes}
    decided_ids = [purposes[decision["purpose"]].id for decision in canonical]
    # From here to the commit, the site's appends queue: the current state read next
    # must be the one the previous append left (a withdrawal depends on it).
    lock_chain_head(site)
    existing = {
        (state.purpose_id, state.service): state
        for state in db.session.scalars(
            select(CurrentState).where(
                CurrentState.subject_id == subject.id, CurrentState.purpose_id.in_(decided_ids)
            )
        )
    }
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
        region=region,
        mode=mode,
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


def check_purpose(
    site: Site,
    subject: Subject | None,
    purpose_key: str,
    service: str | None = None,
    *,
    is_identifier_erased: bool = False,
    region: str | None = None,
    is_gpc: bool = False,
    now: datetime | None = None,
) -> Verdict:
    """Decide whether a purpose (or one of its services) is allowed for a subject.

    ``is_identifier_erased``: no subject, because the email or user id asked about
    belonged to a person who was erased. ``region`` and ``is_gpc``: where the person is
    and whether their browser sends Global Privacy Control (for an opt-out default).
    """
    purpose = next((p for p in site.purposes if p.key == purpose_key), None)
    is_known = purpose is not None and (service is None or service in purpose.service_keys)
    states = {}
    if is_known and subject is not None and not purpose.is_required:
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
    material = latest_material_policy(site, now=now) if states else None
    mode = regions.mode_for(site.region_rules, region)
    return decide(
        is_known=is_known,
        is_required=is_known and purpose.is_required,
        is_erased=is_identifier_erased if subject is None else subject.erased_at is not None,
        purpose_state=states.get(""),
        service_state=states.get(service) if service else None,
        lifetime_days=site.lifetime_days,
        material_published_at=material.published_at if material else None,
        now=now or now_utc(),
        is_default_allowed=is_known and regions.purpose_default(purpose, mode, is_gpc=is_gpc),
    )


@dataclass
class VisitorCheck:
    """What the public check found: the site's allowed origins and the verdict."""

    allowed_origins: list[str]
    verdict: Verdict


@functools.cache
def _visitor_check_statement():
    """Built once: the check is the hot path, and building a query costs more than running it."""
    material_published_at = (
        select(PolicyVersion.published_at)
        .where(
            PolicyVersion.site_id == Site.id,
            PolicyVersion.is_material.is_(True),
            # A version scheduled ahead counts from its time, to the second.
            PolicyVersion.published_at <= bindparam("now", type_=UTCDateTime()),
        )
        .order_by(PolicyVersion.published_at.desc())
        .limit(1)
        .scalar_subquery()
    )
    return (
        select(
            Site.allowed_origins,
            Site.lifetime_days,
            Site.region_rules,
            Purpose.id.label("purpose_id"),
            Purpose.is_required,
            Purpose.services,
            Purpose.consent_mode,
            Purpose.is_opt_out_default,
            Purpose.is_notice_only,
            Subject.id.label("subject_id"),
            Subject.erased_at,
            CurrentState.service,
            CurrentState.is_granted,
            CurrentState.is_withdrawal,
            CurrentState.decided_at,
            CurrentState.expires_at,
            CurrentState.policy_published_at,
            material_published_at.label("material_published_at"),
        )
        .select_from(Site)
        .outerjoin(
            Purpose, (Purpose.site_id == Site.id) & (Purpose.key == bindparam("purpose_key"))
        )
        .outerjoin(
            Visitor,
            (Visitor.visitor_id == bindparam("visitor_id")) & (Visitor.site_id == Site.id),
        )
        .outerjoin(Subject, Subject.id == Visitor.subject_id)
        .outerjoin(
            CurrentState,
            (CurrentState.subject_id == Subject.id)
            & (CurrentState.purpose_id == Purpose.id)
            & ((CurrentState.service == "") | (CurrentState.service == bindparam("service"))),
        )
        .where(Site.key == bindparam("site_key"))
    )


@functools.cache
def _check_on_driver(dialect) -> tuple[str, dict, tuple[str, ...] | None, list, type]:
    """The check compiled once for a dialect: SQL, fixed parameters, their order, types."""
    statement = _visitor_check_statement()
    compiled = statement.compile(dialect=dialect)
    processors = [
        column.type.dialect_impl(dialect).result_processor(dialect, None)
        for column in statement.selected_columns
    ]
    row_type = namedtuple("CheckRow", [column.key for column in statement.selected_columns])
    order = tuple(compiled.positiontup) if compiled.positional else None
    # Parameters whose type converts them (the time: naive UTC on SQLite).
    converters = {
        name: converter
        for name, bind in compiled.binds.items()
        if (converter := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None
        and isinstance(bind.type, UTCDateTime)
    }
    return str(compiled), compiled.params, order, processors, row_type, converters


def _check_rows_on_driver(engine: Engine, params: dict) -> list:
    """Run the check on a pooled driver connection: the hot path, without the Core.

    The statement and its type conversions are SQLAlchemy's, compiled once; each call
    is one ``cursor.execute``. A connection that fails is discarded, not reused.
    """
    sql, fixed, order, processors, row_type, converters = _check_on_driver(engine.dialect)
    params = {**fixed, **params}
    for name, convert in converters.items():
        params[name] = convert(params[name])
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute(sql, [params[name] for name in order] if order else params)
        fetched = cursor.fetchall()
        cursor.close()
    except BaseException:
        connection.invalidate()
        raise
    finally:
        connection.close()
    return [
        row_type(
            *(
                process(value) if process else value
                for process, value in zip(processors, row, strict=True)
            )
        )
        for row in fetched
    ]


def check_visitor(
    site_key: str,
    visitor_id: str | None,
    purpose_key: str,
    service: str | None = None,
    *,
    region: str | None = None,
    is_gpc: bool = False,
    now: datetime | None = None,
    engine: Engine | None = None,
) -> VisitorCheck | None:
    """The public check in one SQL statement, whatever the size of the history.

    Returns None for an unknown site. Reads the site (its region rules too), the
    purpose, the visitor's subject, its current state (purpose and service rows) and
    the latest material policy date together. ``engine``, if given, is an
    ``autocommit_engine``.
    """
    params = {
        "site_key": site_key,
        "visitor_id": visitor_id,
        "purpose_key": purpose_key,
        "service": service or "",
        "now": now or now_utc(),
    }
    if engine is not None:
        rows = _check_rows_on_driver(engine, params)
    else:
        # Straight on a pooled connection in autocommit, not through the ORM session: one
        # statement reads consistently on its own, and on PostgreSQL this saves the BEGIN
        # and ROLLBACK round trips and the unit of work.
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            rows = connection.execute(_visitor_check_statement(), params).all()
    if not rows:
        return None
    first = rows[0]
    service_keys = {entry["key"] for entry in first.services or []}
    states = {row.service: row for row in rows if row.service is not None}
    is_known = first.purpose_id is not None and (service is None or service in service_keys)
    verdict = decide(
        is_known=is_known,
        is_required=bool(first.is_required),
        is_erased=first.erased_at is not None,
        purpose_state=states.get(""),
        service_state=states.get(service) if service else None,
        lifetime_days=first.lifetime_days,
        material_published_at=first.material_published_at,
        now=now or now_utc(),
        is_default_allowed=is_known
        and regions.allows_by_default(
            regions.mode_for(first.region_rules, region),
            is_opt_out_default=bool(first.is_opt_out_default),
            is_notice_only=bool(first.is_notice_only),
            is_advertising=regions.is_advertising(purpose_key, first.consent_mode),
            is_gpc=is_gpc,
        ),
    )
    return VisitorCheck(list(first.allowed_origins or []), verdict)


def describe_state(
    site: Site,
    subject: Subject,
    *,
    region: str | None = None,
    is_gpc: bool = False,
    now: datetime | None = None,
) -> dict:
    """Every purpose's verdict for a subject, with per-service verdicts where decided."""
    now = now or now_utc()
    mode = regions.mode_for(site.region_rules, region)
    material = latest_material_policy(site, now=now)
    material_published_at = material.published_at if material else None
    states: dict[int, dict[str, CurrentState]] = {}
    for state in db.session.scalars(
        select(CurrentState).where(CurrentState.subject_id == subject.id)
    ):
        states.setdefault(state.purpose_id, {})[state.service] = state
    described = {}
    for purpose in site.purposes:
        mine = states.get(purpose.id, {})
        facts = {
            "is_known": True,
            "is_required": purpose.is_required,
            "is_erased": subject.erased_at is not None,
            "purpose_state": mine.get(""),
            "lifetime_days": site.lifetime_days,
            "material_published_at": material_published_at,
            "now": now,
            "is_default_allowed": regions.purpose_default(purpose, mode, is_gpc=is_gpc),
        }
        services = {
            service: decide(**facts, service_state=mine.get(service)).body(purpose.key, service)
            for service in sorted(purpose.service_keys)
        }
        described[purpose.key] = {**decide(**facts).body(purpose.key), "services": services}
    return described
