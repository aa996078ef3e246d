"""Recording: a submission of decisions, checked, appended to the chain, current state kept.

A submission is read and validated first (``prepare_submission``: the site's purposes
and policy, its subject, its idempotency key), outside any lock. Appending it
(``append_submissions``, under the site's chain lock), for however many submissions,
runs one statement per kind: the idempotency keys and the current states they depend
on, read under the lock; the webhook outbox; then, each row with an id reserved ahead
(``consent.driver.ReservedIds``) and all in one round trip with the COMMIT, new
subjects, the records hashed in chain order, new visitors, current states (upserted)
and the answers kept for retries; the database moves the chain head. The lock is held
only for that.

``record_submission`` (a visitor's, from the banner or the site's backend) appends
with whatever else is waiting for the site's chain, in one transaction of its own
(group commit, ``consent.group_commit``), and returns once it has committed.
``record_decision`` and ``record_for_person`` (a known person's: the CLI, admin,
unsubscribe, rights requests, the server API) append one submission in the caller's
transaction, which commits once. Each hands the answer it stores for retries to the
caller's ``answer`` function: the API dumps bodies and signs tokens, the domain does not.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from flask import current_app
from sqlalchemy import Integer, String, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from consent import chain, metrics, regions, webhooks
from consent.chain import lock_chain
from consent.db import db, now_utc, writing_connection
from consent.driver import (
    ROWS_PER_CONDITION,
    ReservedIds,
    any_row,
    chunks,
    each,
    fetched,
    fetched_together,
    sent_together,
    values_of_each,
)
from consent.errors import InvalidRequest
from consent.group_commit import GroupCommit, write_each_alone
from consent.idempotency import (
    checked_request_digest,
    different_submission,
    idempotency_key_digest,
)
from consent.models import (
    ChainHead,
    ConsentRecord,
    CurrentState,
    IdempotentRequest,
    Site,
    Subject,
    Visitor,
    WebhookDelivery,
    WebhookEvent,
)
from consent.site_facts import SiteFacts, facts_of
from consent.visitors import live_subject, new_opaque_id

#: ``app.extensions`` key of the process's group commit.
GROUP_COMMIT = "consent.group_commit"
#: ``app.extensions`` key of the process's ids reserved for new subjects and records.
RESERVED_IDS = "consent.reserved_ids"
#: The columns a record is inserted with (its id among them, reserved).
RECORD_COLUMNS = [column.key for column in ConsentRecord.__table__.columns]

#: Turns what is recorded for a visitor (its id; None: a person the site knows) into
#: the answer a client gets (and its retries get again): called before the chain lock,
#: it signs what it can then; what it gives turns the record into the answer.
Answer = Callable[[str | None], Callable[[ConsentRecord], dict[str, Any]]]


class Recorded(NamedTuple):
    """The answer to a submission, and whether it is an earlier answer replayed."""

    answer: dict[str, Any]
    is_replay: bool


def refuse_advertising_without_explicit_choice(
    site: SiteFacts, decisions: list[dict[str, Any]], source: str
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


def validate_decisions(site: SiteFacts, decisions: list[dict[str, Any]]) -> list[dict[str, Any]]:
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


@dataclass
class Submission:
    """One submission, read and validated, ready to be appended alone or in a batch."""

    site_id: int
    site_key: str
    lifetime_days: int
    #: Canonical decisions (``validate_decisions``) and their purposes' ids by key.
    decisions: list[dict[str, Any]]
    purpose_ids: dict[str, int]
    source: str
    policy_version: str | None
    policy_published_at: datetime | None
    config_hash: str | None = None
    language: str | None = None
    is_gpc: bool = False
    ip_truncated: str | None = None
    #: Where the visitor was (ISO 3166 code) and the site's rule there, when known.
    region: str | None = None
    mode: str | None = None
    #: The subject it is about; None: a first-time visitor, created with the record.
    subject_id: int | None = None
    pseudonym: str = field(default_factory=new_opaque_id)
    email_encrypted: bytes | None = None
    #: The visitor to issue (new subject) or whose last visit to note; None: neither.
    visitor_id: str | None = None
    #: (key digest, request digest) of its ``Idempotency-Key``, if it had one.
    idempotency: tuple[str, str] | None = None
    #: The site's active webhook endpoints (the outbox gets a row per event they take).
    endpoints: list = field(default_factory=list)
    #: How its answer is made, for the visitor it ends up with (``Answer``).
    answer_for: Answer | None = None
    #: The answer, made from the record appended (under the lock if it has a key: kept
    #: for retries), by ``answer_for(visitor_id)``.
    answer: Callable[[ConsentRecord], dict] | None = None
    #: The site's ``config_version`` it was checked against, when that is yet to be
    #: confirmed: under the chain lock, a site changed since refuses it (``StaleFacts``).
    checked_version: int | None = None


class StaleFacts(Exception):
    """A submission checked against a copy of its site older than the site (or a site
    deleted meanwhile): not appended, to be checked again against the site as it is."""


class ChainBusy(Exception):
    """A submission's chain was locked elsewhere when a batch for every site was taken:
    not appended, it waits for that chain's lock in the site's own queue."""


def _not_appended(submission: Submission, versions: dict[int, int], queue) -> Exception | None:
    """Why a submission cannot be appended in this batch (None: it can): its site's chain
    was not locked for it, or the site changed since it was checked (``checked_version``)."""
    version = versions.get(submission.site_id)
    if version is None:  # PostgreSQL skips a chain locked elsewhere (or a deleted site)
        return ChainBusy() if queue == EVERY_SITE else StaleFacts()
    return None if submission.checked_version in (None, version) else StaleFacts()


@dataclass
class Appended:
    """A submission as appended: its record, whose it is, what it withdrew, its answer."""

    record: ConsentRecord
    subject_id: int
    pseudonym: str
    visitor_id: str | None
    withdrawn: list[str]
    answer: dict | None = None
    #: True: an earlier submission with the same key was appended; ``answer`` is its answer.
    is_replay: bool = False


def prepare_submission(
    site: SiteFacts,
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
    subject: Subject | None = None,
) -> Submission:
    """Validate decisions against the site and read what appending them needs (422s here)."""
    canonical = validate_decisions(site, decisions)
    policy = site.policy(policy_version)
    prepared = Submission(
        site_id=site.id,
        site_key=site.key,
        lifetime_days=site.lifetime_days,
        decisions=canonical,
        purpose_ids={purpose.key: purpose.id for purpose in site.purposes},
        source=source,
        policy_version=policy.version if policy else None,
        policy_published_at=policy.published_at if policy else None,
        config_hash=config_hash,
        language=language,
        is_gpc=is_gpc,
        ip_truncated=ip_truncated,
        region=region,
        mode=mode,
        endpoints=list(site.endpoints),
    )
    if subject is not None:
        prepared.subject_id = subject.id
        prepared.pseudonym = subject.pseudonym
        prepared.email_encrypted = subject.email_encrypted
    return prepared


def submitted_facts(args: dict[str, Any], **where: str | None) -> dict[str, Any]:
    """What a submission's arguments say besides its decisions (and ``region``/``mode``)."""
    return {
        "source": args["source"],
        **{name: args.get(name) for name in ("policy_version", "config_hash", "language")},
        **where,
    }


def record_decision(site: Site, subject: Subject, decisions: list[dict[str, Any]], **facts):
    """Record one submission for a known subject in the caller's transaction; its record.

    Takes the site's chain lock (held to the caller's commit) and brings current state
    up to date; the session's loaded chain head, states and visitors are refreshed.
    """
    prepared = prepare_submission(facts_of(site), decisions, subject=subject, **facts)
    return _append_in_session(site, prepared).record


def _append_in_session(site: Site, prepared: Submission) -> Appended:
    """Append one submission in the session's transaction, under the site's chain lock
    (taken here if the caller has not): a replay of its key too."""
    session = db.session
    head = lock_chain(site)  # noted as locked: later appends in this transaction reuse it
    [outcome] = append_submissions(
        session.connection(), [prepared], {site.id: (head.sequence, head.record_hash)}
    )
    if isinstance(outcome, Exception):
        raise outcome
    if not outcome.is_replay:
        for instance in list(session.identity_map.values()):
            if isinstance(instance, ChainHead | CurrentState | Visitor):
                session.expire(instance)
        metrics.note_pending_records(session, [outcome.record.event])
    return outcome


def record_submission(
    site: SiteFacts, visitor_id: str | None, args: dict[str, Any], **how: Any
) -> Recorded:
    """Record a visitor's submission once, even when the client retries it.

    Read and checked here (``prepare_visitor_submission``), then appended with the others
    waiting for the site's chain (``append_submission``). The request's session
    transaction ends first (it only read), so that it holds no connection or lock the
    batch needs.
    """
    # Unknown or erased: a new visitor, for a new subject.
    subject = live_subject(site.id, visitor_id) if visitor_id is not None else None
    prepared = prepare_visitor_submission(site, visitor_id, subject, args, **how)
    db.session.commit()
    return append_submission(prepared)


def prepare_visitor_submission(
    site: SiteFacts,
    visitor_id: str | None,
    subject: Any,
    args: dict[str, Any],
    *,
    answer: Answer,
    idempotency_key: str | None,
    is_gpc: bool,
    ip_truncated: str | None,
    region: str | None = None,
    mode: str | None = None,
) -> Submission:
    """Check a visitor's submission (422s here) and ready it for appending; no I/O.

    ``subject`` (``id``, ``pseudonym``, ``email_encrypted``) is the visitor's live
    subject, None for a new visitor. An earlier answer to the ``idempotency_key`` is
    looked for under the chain lock, in the batch: of two concurrent retries one
    records and the other replays its answer.
    """
    request_digest = checked_request_digest(idempotency_key, [visitor_id, args])
    if is_gpc:
        refuse_advertising_without_explicit_choice(site, args["decisions"], args["source"])
    prepared = prepare_submission(
        site,
        args["decisions"],
        **submitted_facts(args, region=region, mode=mode),
        is_gpc=is_gpc,
        ip_truncated=ip_truncated,
        subject=subject,
    )
    prepared.visitor_id = visitor_id if subject is not None else new_opaque_id()
    if idempotency_key is not None:
        prepared.idempotency = (idempotency_key_digest(idempotency_key), request_digest)
    prepared.answer_for = answer
    prepared.answer = answer(prepared.visitor_id)  # the visitor's token signed now
    return prepared


def append_submission(prepared: Submission) -> Recorded:
    """Append a prepared submission with whatever else waits for its chain; its answer
    once the batch holding it has committed."""
    # One queue per process, whose batches append for every site in one transaction.
    # PostgreSQL: a chain locked elsewhere (another process's batch, a long purge) is
    # skipped, not awaited, so that it holds up no other site; its submissions wait for
    # it in their site's own queue, which the site's next submissions join meanwhile.
    # SQLite's writer locks the whole database: every site is appended at once.
    group = current_app.extensions[GROUP_COMMIT]
    own_queue = prepared.site_id
    queue = own_queue if group.is_busy(own_queue) else EVERY_SITE
    try:
        appended = group.submit(queue, prepared, functools.partial(_write_batch, queue))
    except ChainBusy:
        group.note_contended(own_queue)
        appended = group.submit(own_queue, prepared, functools.partial(_write_batch, own_queue))
    if appended.answer is None:
        appended.answer = prepared.answer(appended.record)  # outside the lock: no key
    return Recorded(appended.answer, appended.is_replay)


#: The queue of every site's submissions (a site's own: its id).
EVERY_SITE = "every site"


def _write_batch(queue: int | str, take: Callable[[], Sequence[Submission]]) -> list:
    """Append the waiting batch in its own transaction, taken once the lock is held (so
    that it holds whoever came meanwhile); if it fails, each member alone, unless the
    database is out of reach (then every member gets that error)."""
    batch: Sequence[Submission] = ()
    try:
        with writing_connection() as connection:  # SQLite: the database is locked now
            if queue == EVERY_SITE:  # never waits for a chain lock held elsewhere
                batch = take()
                # The keys' earlier answers read once the locks are held, in one round trip.
                heads, versions, answered = _locked_heads(
                    connection, {s.site_id for s in batch}, skip_locked=True, keys_of=batch
                )
            else:
                heads, versions, _ = _locked_heads(connection, [queue])
                batch = take()
                answered = None
            outcomes = [_not_appended(s, versions, queue) for s in batch]
            current = [s for s, outcome in zip(batch, outcomes, strict=True) if outcome is None]
            appended = iter(
                append_submissions(connection, current, heads, commit=True, answered=answered)
                if current
                else ()
            )
            outcomes = [outcome or next(appended) for outcome in outcomes]
    except DBAPIError as error:
        if len(batch) <= 1 or error.connection_invalidated:
            raise
        return write_each_alone(functools.partial(_write_batch, queue), batch)
    metrics.count_records(
        [
            outcome.record.event
            for outcome in outcomes
            if isinstance(outcome, Appended) and not outcome.is_replay
        ]
    )
    return outcomes


def init_recording(app) -> None:
    """Give the app its process's group commit."""
    app.extensions[GROUP_COMMIT] = GroupCommit()
    app.extensions[RESERVED_IDS] = ReservedIds()


def record_for_person(
    site: Site,
    subject_of: Callable[[], Subject],
    args: dict[str, Any],
    *,
    answer: Answer,
    idempotency_key: str | None,
    region: str | None = None,
    mode: str | None = None,
) -> Recorded:
    """Record decisions for a person the site knows by user id or email, once per key.

    ``subject_of`` finds or creates the person; it runs under the site's chain lock,
    as does the look for an earlier answer to the key: of two concurrent retries, the
    second waits for the first's commit and replays its answer.
    """
    lock_chain(site)
    subject = subject_of()
    # The digest names the person by pseudonym: no email or user id is kept with it.
    decisions = {key: value for key, value in args.items() if key not in ("user_id", "email")}
    request_digest = checked_request_digest(idempotency_key, [subject.pseudonym, decisions])
    prepared = prepare_submission(
        facts_of(site),
        args["decisions"],
        subject=subject,
        **submitted_facts(args, region=region, mode=mode),
    )
    if idempotency_key is not None:
        prepared.idempotency = (idempotency_key_digest(idempotency_key), request_digest)
    prepared.answer = answer(None)
    outcome = _append_in_session(site, prepared)
    answer_given = outcome.answer if outcome.answer is not None else prepared.answer(outcome.record)
    return Recorded(answer_given, outcome.is_replay)


# --- the statements ------------------------------------------------------------------


def append_submissions(
    connection: Connection,
    batch: Sequence[Submission],
    heads: dict[int, tuple[int, str]],
    *,
    commit: bool = False,
    answered: list[tuple] | None = None,
) -> list:
    """Append a batch of submissions, each to its site's chain in order; per member,
    what became of it.

    The caller holds the chain lock of each site in the batch and gives its ``heads``
    (site id: sequence, hash) as read under the lock; the database moves each head as
    the records go in (migration 0014). A member's outcome is ``Appended``
    (a replay too) or its own ``InvalidRequest`` (its key was used for a different
    submission): no member's failure fails another. ``commit``: the transaction is the
    batch's own, committed with its last writes (one round trip less under the lock).
    ``answered``: the answers kept for the batch's idempotency keys, if the caller read
    them under the lock already (``_locked_heads``).
    """
    outcomes: list = [None] * len(batch)
    if answered is None:
        answered = [
            row for rows in fetched_together(connection, _answers_read(batch)) for row in rows
        ]
    replays = _replays(batch, outcomes, answered)
    writing = [index for index, outcome in enumerate(outcomes) if outcome is None]
    writing_batch = [batch[index] for index in writing]
    states = _states_read(connection, writing_batch)

    heads = dict(heads)
    records = []
    for submission in writing_batch:
        sequence, previous_hash = heads[submission.site_id]
        record = chain.linked_record(
            submission.site_id,
            submission.site_key,
            sequence + 1,
            previous_hash,
            subject_pseudonym=submission.pseudonym,
            event="decision",
            source=submission.source,
            decisions=submission.decisions,
            details={},
            policy_version=submission.policy_version,
            config_hash=submission.config_hash,
            language=submission.language,
            is_gpc=submission.is_gpc,
            ip_truncated=submission.ip_truncated,
            region=submission.region,
            mode=submission.mode,
        )
        heads[submission.site_id] = (record.sequence, record.record_hash)
        records.append(record)
    now = now_utc()
    new = [s for s in writing_batch if s.subject_id is None]
    ids = current_app.extensions[RESERVED_IDS].take(
        connection, {_SUBJECTS: len(new), _RECORDS: len(records)}
    )
    subject_ids = dict(zip([s.pseudonym for s in new], ids[_SUBJECTS], strict=True))
    for record, record_id in zip(records, ids[_RECORDS], strict=True):
        record.id = record_id
    appended, changes = [], {}
    for index, submission, record in zip(writing, writing_batch, records, strict=True):
        subject_id = submission.subject_id or subject_ids[submission.pseudonym]
        outcome = Appended(
            record,
            subject_id,
            submission.pseudonym,
            submission.visitor_id,
            _decide_states(states, changes, subject_id, submission, record),
        )
        if submission.answer is not None and submission.idempotency is not None:
            outcome.answer = submission.answer(record)  # kept with the record
        outcomes[index] = outcome
        appended.append((submission, outcome))
    for index, first in replays.items():
        earlier = outcomes[first]
        outcomes[index] = replace(earlier, is_replay=True)
    _delete_replaced_states(connection, changes)
    _write_outbox(connection, appended)
    # Every row with its id: one round trip for all (PostgreSQL), the COMMIT with it.
    with sent_together(connection, commit=commit) as send:
        send(_NEW_SUBJECTS, _subject_rows(new, subject_ids, now))
        send(_NEW_RECORDS, [{name: getattr(r, name) for name in RECORD_COLUMNS} for r in records])
        send(_NEW_VISITORS, _visitor_rows(new, subject_ids, now))
        send(_state_upsert(connection.dialect.name), [r for r in changes.values() if r])
        send(_NEW_ANSWERS, _answer_rows(appended, now))
        send(_SEEN, _seen_rows(writing_batch, records))
    return outcomes


@functools.cache  # one statement per count, compiled once (``consent.driver``)
def _heads(count: int, skip_locked: bool):
    """The chain heads of ``count`` sites (``site_0`` ...), locked; ``skip_locked``: only
    those no other transaction holds (SQLite: every head, its database locked already)."""
    return (
        select(ChainHead.site_id, ChainHead.sequence, ChainHead.record_hash, Site.config_version)
        .join(Site, Site.id == ChainHead.site_id)
        .where(ChainHead.site_id.in_(each("site", count, Integer)))
        .order_by(ChainHead.site_id)
        .with_for_update(of=ChainHead, skip_locked=skip_locked)
    )


@functools.cache  # one statement per count, compiled once (``consent.driver``)
def _answered(count: int):
    """The answers kept for ``count`` idempotency keys (``site_0``, ``key_0`` ...), each
    a search of the unique index (``any_row``)."""
    keys = zip(each("site", count, Integer), each("key", count, String), strict=True)
    return select(
        IdempotentRequest.site_id,
        IdempotentRequest.key,
        IdempotentRequest.request_digest,
        IdempotentRequest.response,
    ).where(any_row([IdempotentRequest.site_id, IdempotentRequest.key], list(keys)))


@functools.cache  # one statement per count, compiled once (``consent.driver``)
def _states(purposes: int, subjects: int):
    """The states of ``subjects`` subjects (``subject_0`` ...) for ``purposes`` purposes
    (``purpose_0`` ...), and whether each subject was erased (a row with no state)."""
    return (
        select(Subject.id.label("of_subject"), Subject.erased_at, CurrentState.__table__)
        .outerjoin(
            CurrentState.__table__,
            (CurrentState.subject_id == Subject.id)
            & CurrentState.purpose_id.in_(each("purpose", purposes, Integer)),
        )
        .where(Subject.id.in_(each("subject", subjects, Integer)))
    )


# Each statement is built once: building one costs about what running it costs.
# Sent on the driver (``consent.driver``): an insert a statement, one round trip for several.
_SUBJECTS = Subject.__table__
_RECORDS = ConsentRecord.__table__
_NEW_SUBJECTS = _SUBJECTS.insert()
_NEW_RECORDS = _RECORDS.insert()
_NEW_VISITORS = Visitor.__table__.insert()
_NEW_ANSWERS = IdempotentRequest.__table__.insert()
_SEEN = (
    update(Visitor)
    .where(Visitor.visitor_id == bindparam("of_visitor"))
    .values(last_seen_at=bindparam("seen_at"))
)
# Parameter lists with RETURNING: one cached multi-row INSERT per batch.
_NEW_EVENTS = WebhookEvent.__table__.insert().returning(WebhookEvent.message_id, WebhookEvent.id)
_NEW_DELIVERIES = WebhookDelivery.__table__.insert().returning(WebhookDelivery.id)


def _locked_heads(
    connection, site_ids, *, skip_locked: bool = False, keys_of: Sequence[Submission] = ()
) -> tuple[dict[int, tuple[int, str]], dict[int, int], list[tuple]]:
    """The chain heads (site id: sequence, hash) of these sites, locked until the
    transaction ends (SQLite: its write transaction has locked the database already),
    each site's ``config_version``, and the answers kept for the idempotency keys of
    ``keys_of`` (read after the locks, in the same round trip; none if they have no key).
    Sent on the driver: it is a batch's first statement, in every batch."""
    ids = values_of_each("site", sorted(site_ids))
    rows, *answers = fetched_together(
        connection, [(_heads(len(ids), skip_locked), ids), *_answers_read(keys_of)]
    )
    heads = {row[0]: (row[1], row[2]) for row in rows}
    return heads, {row[0]: row[3] for row in rows}, [row for rows in answers for row in rows]


def _answers_read(batch: Sequence[Submission]) -> list[tuple]:
    """The queries of the answers kept for the batch's idempotency keys (none without),
    ``ROWS_PER_CONDITION`` keys each."""
    keyed = sorted({(s.site_id, s.idempotency[0]) for s in batch if s.idempotency})
    return [
        (
            _answered(len(chunk)),
            {
                **values_of_each("site", [site_id for site_id, _ in chunk]),
                **values_of_each("key", [key for _, key in chunk]),
            },
        )
        for chunk in chunks(keyed, ROWS_PER_CONDITION)
    ]


def _replays(batch, outcomes: list, answered: list[tuple]) -> dict[int, int]:
    """Fill in the outcome of each member whose key was answered already (``answered``,
    read under the lock, so no other writer can be adding one); return the members that
    repeat an earlier member of this batch, each with the index of the one it repeats."""
    stored = {
        (site_id, key): (request_digest, response)
        for site_id, key, request_digest, response in answered
    }
    first_with_key: dict[tuple[int, str], int] = {}
    repeats = {}
    for index, submission in enumerate(batch):
        if submission.idempotency is None:
            continue
        key, request_digest = submission.idempotency
        key = (submission.site_id, key)
        if key in stored:
            earlier_digest, answer = stored[key]
        elif key in first_with_key:
            earlier_digest = batch[first_with_key[key]].idempotency[1]
            answer = None
        else:
            first_with_key[key] = index
            continue
        if earlier_digest != request_digest:
            outcomes[index] = different_submission()
        elif answer is not None:
            outcomes[index] = Appended(None, 0, "", None, [], answer, is_replay=True)
        else:
            repeats[index] = first_with_key[key]
            outcomes[index] = "repeat"  # filled in once the first is appended
    return repeats


def _states_read(connection, batch) -> dict[tuple[int, int, str], dict]:
    """The current states the returning subjects' decisions replace, read under the lock.

    A member whose subject was erased since it was read starts a new subject instead,
    with a new visitor, as a first-time visitor would.
    """
    returning = {s.subject_id for s in batch if s.subject_id}
    if not returning:
        return {}
    purposes = {s.purpose_ids[d["purpose"]] for s in batch if s.subject_id for d in s.decisions}
    table = CurrentState.__table__
    statement = _states(len(purposes), len(returning))
    names = statement.selected_columns.keys()
    values = {
        **values_of_each("purpose", sorted(purposes)),
        **values_of_each("subject", sorted(returning)),
    }
    states, erased = {}, set()
    for row in (
        dict(zip(names, row, strict=True)) for row in fetched(connection, statement, values)
    ):
        if row["erased_at"] is not None:
            erased.add(row["of_subject"])
        elif row["subject_id"] is not None:
            states[(row["subject_id"], row["purpose_id"], row["service"])] = {
                name: row[name] for name in table.columns.keys()
            }
    for submission in batch:
        if submission.subject_id in erased:
            submission.subject_id, submission.email_encrypted = None, None
            submission.pseudonym = new_opaque_id()
            if submission.visitor_id:  # a new visitor: its token signed again (rare)
                submission.visitor_id = new_opaque_id()
                submission.answer = submission.answer_for(submission.visitor_id)
    return states


def _subject_rows(new, subject_ids: dict[str, int], now) -> list[dict]:
    """The subjects of first-time visitors (and of people first recorded), ids reserved."""
    return [
        {
            "id": subject_ids[s.pseudonym],
            "site_id": s.site_id,
            "pseudonym": s.pseudonym,
            "created_at": now,
        }
        for s in new
    ]


def _visitor_rows(new, subject_ids: dict[str, int], now) -> list[dict]:
    """The visitors of first-time visitors (a server-side record for a person has none)."""
    return [
        {
            "visitor_id": s.visitor_id,
            "site_id": s.site_id,
            "subject_id": subject_ids[s.pseudonym],
            "created_at": now,
            "last_seen_at": now,  # retention forgets visitors unseen for a consent lifetime
        }
        for s in new
        if s.visitor_id is not None
    ]


def _decide_states(
    states: dict, changes: dict, subject_id: int, submission: Submission, record
) -> list[str]:
    """Note in ``changes`` the current states one record's decisions make, on top of
    ``states`` (as read) and earlier changes, in chain order; return what it withdrew."""
    expires_at = record.recorded_at + timedelta(days=submission.lifetime_days)
    withdrawn = []
    for decision in submission.decisions:
        purpose_id = submission.purpose_ids[decision["purpose"]]
        entries = [("", decision["granted"]), *decision.get("services", {}).items()]
        services = {service for service, _ in entries}
        for key in {*states, *changes}:
            if key[:2] == (subject_id, purpose_id) and key[2] not in services:
                # A decision for the whole purpose replaces earlier per-service choices.
                changes[key] = None
        for service, is_granted in entries:
            key = (subject_id, purpose_id, service)
            before = (changes[key] if key in changes else states.get(key)) or {}
            was_granted = bool(before.get("is_granted"))
            if service == "" and was_granted and not is_granted:
                withdrawn.append(decision["purpose"])
            changes[key] = {
                "subject_id": subject_id,
                "purpose_id": purpose_id,
                "service": service,
                "is_granted": is_granted,
                # A refusal that replaces a grant is a withdrawal, and stays one until a grant.
                "is_withdrawal": not is_granted
                and (was_granted or bool(before.get("is_withdrawal"))),
                "decided_at": record.recorded_at,
                "expires_at": expires_at,
                "policy_published_at": submission.policy_published_at,
                "record_id": record.id,
                "source": record.source,
            }
    return withdrawn


def _delete_replaced_states(connection, changes: dict) -> None:
    """Delete the current states a decision for a whole purpose replaced."""
    gone = [key for key, row in changes.items() if row is None]
    table = CurrentState.__table__
    columns = [table.c.subject_id, table.c.purpose_id, table.c.service]
    for chunk in chunks(gone, ROWS_PER_CONDITION):
        connection.execute(delete(table).where(any_row(columns, chunk)))


@functools.cache
def _state_upsert(dialect: str):
    """Insert a current state, or replace the one for its subject, purpose and service."""
    statement = (postgresql if dialect == "postgresql" else sqlite).insert(CurrentState)
    key = ("subject_id", "purpose_id", "service")
    return statement.on_conflict_do_update(
        index_elements=list(key),
        set_={c.name: statement.excluded[c.name] for c in statement.table.c if c.name not in key},
    )


def _answer_rows(appended, now) -> list[dict]:
    """The answers of submissions sent with an ``Idempotency-Key``, kept for retries."""
    return [
        {
            "site_id": submission.site_id,
            "key": submission.idempotency[0],
            "request_digest": submission.idempotency[1],
            "response": outcome.answer,
            "created_at": now,
        }
        for submission, outcome in appended
        if submission.idempotency is not None
    ]


def _write_outbox(connection, appended) -> None:
    """Announce each recorded decision (and withdrawal) to the endpoints that take them."""
    events, deliveries = [], []
    for submission, outcome in appended:
        record = outcome.record
        base = {"subject": outcome.pseudonym, "recorded_at": record.recorded_at.isoformat()}
        announced = [
            (
                "consent.recorded",
                {
                    **base,
                    "record": record.sequence,
                    "source": record.source,
                    "policy_version": record.policy_version,
                    "decisions": record.decisions,
                },
            )
        ]
        if outcome.withdrawn:
            announced.append(("consent.withdrawn", {**base, "purposes": outcome.withdrawn}))
        for event_type, payload in announced:
            row = webhooks.outbox_row(
                submission.site_id,
                event_type,
                payload,
                submission.endpoints,
                submission.email_encrypted,
            )
            if row is not None:
                events.append(row[0])
                deliveries.append(row[1])
    if not events:
        return
    ids = dict(connection.execute(_NEW_EVENTS, events).all())
    now = now_utc()
    connection.execute(
        _NEW_DELIVERIES,
        [
            {
                "event_id": ids[event["message_id"]],
                "endpoint_id": endpoint_id,
                "next_attempt_at": now,
            }
            for event, endpoint_ids in zip(events, deliveries, strict=True)
            for endpoint_id in endpoint_ids
        ],
    ).all()


def _seen_rows(batch, records) -> list[dict]:
    """When returning visitors were last seen (retention forgets the long unseen)."""
    if not records:
        return []
    seen_at = records[-1].recorded_at
    return [
        {"of_visitor": s.visitor_id, "seen_at": seen_at}
        for s in batch
        if s.subject_id is not None and s.visitor_id
    ]
