"""The check: "may this purpose run for this person?", read in as few statements as it can.

The public check reads everything it needs in one SQL statement (``check_visitor``,
also run straight on the driver by the fast path); the server check, exports and the
visitor's own state read through the session. All of them decide with
``consent.decision.decide``.
"""

from __future__ import annotations

import functools
import json
from collections import namedtuple
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Text, bindparam, case, cast, select
from sqlalchemy.engine import Engine

from consent import regions
from consent.db import UTCDateTime, db, now_utc
from consent.decision import Verdict, decide
from consent.models import CurrentState, PolicyVersion, Purpose, Site, Subject, Visitor
from consent.sites import latest_material_policy


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
            # The JSON settings as text, decoded once per process (``_setting``).
            cast(Site.allowed_origins, Text).label("allowed_origins"),
            Site.lifetime_days,
            cast(Site.region_rules, Text).label("region_rules"),
            Purpose.id.label("purpose_id"),
            Purpose.is_required,
            cast(Purpose.services, Text).label("services"),
            cast(Purpose.consent_mode, Text).label("consent_mode"),
            Purpose.is_opt_out_default,
            Purpose.is_notice_only,
            # Read only when no state answers: an erased subject has none (migration 0016).
            case(
                (
                    CurrentState.subject_id.is_(None),
                    select(Subject.erased_at)
                    .where(Subject.id == Visitor.subject_id)
                    .scalar_subquery(),
                )
            ).label("erased_at"),
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
        .outerjoin(
            CurrentState,
            (CurrentState.subject_id == Visitor.subject_id)
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


@functools.lru_cache(maxsize=1024)
def _setting(text: str | None) -> Any:
    """A site's or purpose's JSON setting as the check reads it: decoded once per process
    (it is the same text check after check), so shared and never to be changed."""
    return None if text is None else json.loads(text)


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
    purpose, the visitor's current state (purpose and service rows; the subject's erasure
    only where there is none) and the latest material policy date together. ``engine``,
    if given, is an ``autocommit_engine``.
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
    service_keys = {entry["key"] for entry in _setting(first.services) or []}
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
            regions.mode_for(_setting(first.region_rules), region),
            is_opt_out_default=bool(first.is_opt_out_default),
            is_notice_only=bool(first.is_notice_only),
            is_advertising=regions.is_advertising(purpose_key, _setting(first.consent_mode)),
            is_gpc=is_gpc,
        ),
    )
    return VisitorCheck(list(_setting(first.allowed_origins) or []), verdict)


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
