"""Prometheus metrics: what every process counts, and what the database knows.

Counters and histograms live in prometheus-client's registry; under gunicorn the
shipped configuration sets ``PROMETHEUS_MULTIPROC_DIR`` before anything is imported,
so each worker writes its values to a file there and ``/metrics`` adds them up
(multiprocess mode). Facts the database holds (the last chain verification of each
site, webhook deliveries by outcome) are read from it at scrape time, so every
instance reports the same, whoever did the work.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import event, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from consent import webhooks
from consent.db import db
from consent.models import ConsentRecord, Site, VerificationRun

REQUESTS = Counter(
    "consent_http_requests",
    "Requests answered, by route (endpoint), method and status.",
    ["route", "method", "status"],
)
#: The routes whose latency is measured (answers of the hot paths).
TIMED_ROUTES = {
    "public.Check",
    "server.ServerCheck",
    "server.BulkCheck",
    "public.Records",
    "server.ServerRecords",
}
LATENCY = Histogram(
    "consent_http_request_duration_seconds",
    "Time to answer a check or a record, by route.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
RECORDS_APPENDED = Counter(
    "consent_records_appended",
    "Records committed to the history, by event (decision, link, erasure, ...).",
    ["event"],
)
CHECKS = Counter("consent_checks", "Checks answered, by reason.", ["reason"])
REFUSED_ORIGINS = Counter(
    "consent_refused_origins", "Public API writes refused for a browser origin not allowed."
)
RATE_LIMITED = Counter("consent_rate_limited", "Requests refused with 429, by route.", ["route"])

#: Session.info key: records inserted in the current transaction, counted once committed.
PENDING_RECORDS = "consent.metrics.pending_records"


#: Labelled children by metric and label values: ``labels()`` costs more than the count.
_CHILDREN: dict[tuple, Any] = {}


def _labelled(metric, *values: str):
    """``metric.labels(*values)``, looked up once per process."""
    child = _CHILDREN.get((metric, values))
    if child is None:
        child = _CHILDREN.setdefault((metric, values), metric.labels(*values))
    return child


def count_check(reason: str) -> None:
    """Count one check answer and its reason."""
    _labelled(CHECKS, reason).inc()


def count_refused_origin() -> None:
    REFUSED_ORIGINS.inc()


def count_request(route: str, method: str, status: int, seconds: float) -> None:
    """Count one answered request; time it if it is a check or a record."""
    _labelled(REQUESTS, route, method, str(status)).inc()
    if route in TIMED_ROUTES:
        _labelled(LATENCY, route).observe(seconds)
    if status == 429:
        _labelled(RATE_LIMITED, route).inc()


def _note_record(mapper, connection, record) -> None:
    session = Session.object_session(record)
    if session is not None:
        note_pending_records(session, [record.event])


def note_pending_records(session: Session, events: list[str]) -> None:
    """Count records appended by statements in ``session``'s transaction once it commits."""
    session.info.setdefault(PENDING_RECORDS, []).extend(events)


def count_records(events: list[str]) -> None:
    """Count history records whose transaction has committed, by event."""
    for record_event in events:
        _labelled(RECORDS_APPENDED, record_event).inc()


def _count_committed_records(session: Session) -> None:
    count_records(session.info.pop(PENDING_RECORDS, []))


def _forget_rolled_back_records(session: Session, previous_transaction) -> None:
    session.info.pop(PENDING_RECORDS, None)


def init_metrics() -> None:
    """Count history records when their transaction commits (listeners set up once).

    On the service's own session factory (its sessionmaker's own Session subclass), not
    on SQLAlchemy's ``Session`` class: other sessions in the process are left alone.
    """
    if not event.contains(ConsentRecord, "after_insert", _note_record):
        event.listen(ConsentRecord, "after_insert", _note_record)
        event.listen(db.session, "after_commit", _count_committed_records)
        event.listen(db.session, "after_soft_rollback", _forget_rolled_back_records)


def database_families():
    """Metric families read from the database now (in an app context)."""
    intact = GaugeMetricFamily(
        "consent_chain_intact",
        "Whether the last verification of the site's chain found it intact (1) or not (0).",
        labels=["site"],
    )
    verified_at = GaugeMetricFamily(
        "consent_chain_verified_timestamp_seconds",
        "When the site's chain was last verified (Unix time).",
        labels=["site"],
    )
    latest = (
        select(VerificationRun.site_id, func.max(VerificationRun.id).label("id"))
        .group_by(VerificationRun.site_id)
        .subquery()
    )
    rows = db.session.execute(
        select(Site.key, VerificationRun.is_intact, VerificationRun.ran_at)
        .join(latest, latest.c.site_id == Site.id)
        .join(VerificationRun, VerificationRun.id == latest.c.id)
        .order_by(Site.key)
    )
    for site_key, is_intact, ran_at in rows:
        intact.add_metric([site_key], 1 if is_intact else 0)
        verified_at.add_metric([site_key], ran_at.timestamp())
    return [intact, verified_at, *_webhook_families()]


def _webhook_families():
    deliveries = CounterMetricFamily(
        "consent_webhook_deliveries",
        "Webhook delivery attempts by outcome (delivered, failed, gave_up).",
        labels=["outcome"],
    )
    for outcome, count in webhooks.delivery_counts().items():
        deliveries.add_metric([outcome], count)
    return [deliveries]


class _Families:
    """A collector around families read beforehand (one registry per scrape)."""

    def __init__(self, families) -> None:
        self.families = families

    def collect(self):
        return iter(self.families)


def exposition() -> bytes:
    """The metrics page: every process's counters, then the database's facts."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    page = generate_latest(registry)
    try:
        families = database_families()
    except DBAPIError:  # the process's own counts still go out
        db.session.rollback()
        return page
    from_database = CollectorRegistry()
    from_database.register(_Families(families))
    return page + generate_latest(from_database)
