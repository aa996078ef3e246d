"""Webhooks: tell other systems what changed, through an outbox, signed, retried.

``emit_event`` is the one way to announce a change: it writes the event and one
delivery per subscribed endpoint into the session, so they commit with the change they
report or not at all (nothing is lost, nothing is sent for a rolled-back change).

``consent dispatch`` sends them. Several dispatchers may run: each claims due
deliveries under a row lock (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's write
lock), leases them, posts outside any transaction and writes the outcome only while it
still holds the lease, so each delivery is in one dispatcher's hands at a time.
Messages are signed per the Standard Webhooks specification (``webhook-id``,
``webhook-timestamp``, ``webhook-signature``, with the ``standardwebhooks`` package);
a failure is retried with exponential back-off (``retry_delay``) for more than a day.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from flask import current_app
from sqlalchemy import func, select, update
from standardwebhooks import Webhook

from consent import identifiers
from consent.db import db, now_utc, transaction_cache
from consent.errors import InvalidRequest
from consent.models import (
    WEBHOOK_EVENTS,
    Site,
    Subject,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)

USER_AGENT = "consent-webhooks/1"
#: Transaction cache: the active endpoints per site read in the current transaction.
ENDPOINTS_READ = "consent.webhooks.endpoints"
#: How long a claimed delivery stays in one dispatcher's hands (longer than a post).
LEASE_SECONDS = 120


def webhook_url_problem(url: str) -> str | None:
    """Why ``url`` cannot receive webhooks, or None: http(s) with a host, nothing hidden."""
    # One rule in one place, for consent.validation to take over.
    if not url or len(url) > 2000:
        return "Give the endpoint's URL (at most 2000 characters)."
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "Give an http:// or https:// URL with a host."
    if parts.username or parts.password or parts.fragment:
        return "The URL may not carry a user name, a password or a #fragment."
    return None


def add_endpoint(
    site: Site, url: str, events: list[str], *, is_email_included: bool = False
) -> tuple[WebhookEndpoint, str]:
    """Add an endpoint; return it with its signing secret, shown to the caller once."""
    problem = webhook_url_problem(url)
    if problem:
        raise InvalidRequest("url", problem)
    unknown = sorted(set(events) - set(WEBHOOK_EVENTS))
    if unknown or not events:
        raise InvalidRequest(
            "events", f"Choose events among {', '.join(WEBHOOK_EVENTS)} (unknown: {unknown})."
        )
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    endpoint = WebhookEndpoint(
        site_id=site.id,
        url=url,
        events=[event for event in WEBHOOK_EVENTS if event in events],
        secret_encrypted=identifiers.encrypt(secret),
        is_email_included=is_email_included,
    )
    db.session.add(endpoint)
    db.session.flush()
    transaction_cache(ENDPOINTS_READ).clear()
    return endpoint, secret


def emit_event(
    site: Site, event_type: str, payload: dict[str, Any], *, subject: Subject | None = None
):
    """Write an event to the outbox with a delivery per subscribed endpoint; flush.

    ``payload`` holds no direct identifier; the ``subject``'s email, if it has one, is
    kept encrypted beside the event and sent only to endpoints marked to receive it.
    """
    if event_type not in WEBHOOK_EVENTS:
        raise ValueError(f"unknown webhook event {event_type!r}")
    email_encrypted = subject.email_encrypted if subject is not None else None
    row = outbox_row(site.id, event_type, payload, active_endpoints(site), email_encrypted)
    if row is None:
        return None
    event_values, endpoint_ids = row
    event = WebhookEvent(**event_values)
    db.session.add(event)
    db.session.flush()
    for endpoint_id in endpoint_ids:
        db.session.add(
            WebhookDelivery(event_id=event.id, endpoint_id=endpoint_id, next_attempt_at=now_utc())
        )
    db.session.flush()
    return event


def outbox_row(
    site_id: int,
    event_type: str,
    payload: dict[str, Any],
    endpoints: list[WebhookEndpoint],
    email_encrypted: bytes | None,
) -> tuple[dict[str, Any], list[int]] | None:
    """An outbox event's column values and the endpoints it goes to; None if nobody listens.

    The email (of a subject that has one) is kept only if an endpoint is marked for it.
    """
    endpoints = [endpoint for endpoint in endpoints if event_type in endpoint.events]
    if not endpoints:
        return None
    email = None
    if email_encrypted is not None and any(e.is_email_included for e in endpoints):
        email = identifiers.decrypt(email_encrypted)
    values = {
        "site_id": site_id,
        "message_id": "msg_" + secrets.token_urlsafe(18),
        "type": event_type,
        "payload": payload,
        "email_encrypted": identifiers.encrypt(email) if email else None,
        "created_at": now_utc(),
    }
    return values, [endpoint.id for endpoint in endpoints]


def active_endpoints(site: Site) -> list[WebhookEndpoint]:
    """The site's active endpoints, read once per transaction (one statement a record)."""
    cached = transaction_cache(ENDPOINTS_READ).get(site.id)
    if cached is not None:
        return cached
    endpoints = db.session.scalars(
        select(WebhookEndpoint).where(
            WebhookEndpoint.site_id == site.id, WebhookEndpoint.is_active.is_(True)
        )
    ).all()
    # Looked up again: the statement may have begun the transaction the cache belongs to.
    transaction_cache(ENDPOINTS_READ)[site.id] = endpoints
    return endpoints


def retry_delay(attempts: int) -> timedelta:
    """How long to wait after the ``attempts``-th failure: doubling, capped."""
    config = current_app.config
    seconds = config["WEBHOOK_RETRY_BASE_SECONDS"] * 2 ** max(attempts - 1, 0)
    return timedelta(seconds=min(seconds, config["WEBHOOK_RETRY_MAX_SECONDS"]))


def message_body(event: WebhookEvent, endpoint: WebhookEndpoint, site_key: str) -> str:
    """The JSON posted for an event: type, timestamp and data (email only if marked)."""
    data = {"site": site_key, **event.payload}
    if endpoint.is_email_included and event.email_encrypted is not None:
        data["email"] = identifiers.decrypt(event.email_encrypted)
    return json.dumps(
        {"type": event.type, "timestamp": event.created_at.isoformat(), "data": data},
        separators=(",", ":"),
        ensure_ascii=False,
    )


# --- the dispatcher ----------------------------------------------------------------


@dataclass
class Claim:
    delivery_id: int
    lease_token: str


def claim_due(limit: int) -> list[Claim]:
    """Lease up to ``limit`` due deliveries to this dispatcher; commits."""
    now = now_utc()
    token = secrets.token_urlsafe(18)
    rows = db.session.scalars(
        select(WebhookDelivery)
        .where(
            WebhookDelivery.status == "pending",
            WebhookDelivery.next_attempt_at <= now,
            (WebhookDelivery.leased_until.is_(None)) | (WebhookDelivery.leased_until < now),
        )
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    for delivery in rows:
        delivery.leased_until = now + timedelta(seconds=LEASE_SECONDS)
        delivery.lease_token = token
    db.session.commit()
    return [Claim(delivery.id, token) for delivery in rows]


@dataclass
class Outcome:
    status_code: int | None
    latency_ms: int
    error: str | None

    @property
    def is_delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def post(url: str, body: str, headers: dict[str, str], timeout: float) -> Outcome:
    """POST one signed message; never follow a redirect (the URL is the endpoint)."""
    started = time.perf_counter()
    try:
        response = httpx.post(
            url, content=body.encode(), headers=headers, timeout=timeout, follow_redirects=False
        )
    except httpx.HTTPError as error:
        elapsed = round((time.perf_counter() - started) * 1000)
        return Outcome(None, elapsed, f"{error.__class__.__name__}: {error}"[:500])
    elapsed = round((time.perf_counter() - started) * 1000)
    error = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
    return Outcome(response.status_code, elapsed, error)


def deliver(claim: Claim) -> str | None:
    """Send one claimed delivery and keep the outcome; commits. Returns the outcome."""
    delivery = db.session.get(WebhookDelivery, claim.delivery_id)
    if delivery is None or delivery.lease_token != claim.lease_token:
        db.session.rollback()
        return None
    event, endpoint = delivery.event, delivery.endpoint
    site_key = db.session.get(Site, event.site_id).key
    body = message_body(event, endpoint, site_key)
    signer = Webhook(identifiers.decrypt(endpoint.secret_encrypted))
    sent_at = now_utc()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": event.message_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": signer.sign(event.message_id, sent_at, body),
    }
    url = endpoint.url
    db.session.rollback()  # no transaction (nor SQLite's write lock) while the post is out
    outcome = post(url, body, headers, current_app.config["WEBHOOK_TIMEOUT_SECONDS"])
    return record_outcome(claim, outcome)


def record_outcome(claim: Claim, outcome: Outcome) -> str | None:
    """Write an attempt's outcome if the lease is still ours; commits."""
    delivery = db.session.scalars(
        select(WebhookDelivery)
        .where(
            WebhookDelivery.id == claim.delivery_id,
            WebhookDelivery.lease_token == claim.lease_token,
        )
        .with_for_update()
    ).first()
    if delivery is None:  # the lease ran out and another dispatcher took over
        db.session.rollback()
        return None
    now = now_utc()
    delivery.attempts += 1
    delivery.last_status_code = outcome.status_code
    delivery.last_latency_ms = outcome.latency_ms
    delivery.last_error = outcome.error
    delivery.leased_until = None
    delivery.lease_token = None
    if outcome.is_delivered:
        delivery.status, delivery.delivered_at, label = "delivered", now, "delivered"
    elif delivery.attempts >= current_app.config["WEBHOOK_MAX_ATTEMPTS"]:
        delivery.status, label = "gave_up", "gave_up"
    else:
        delivery.next_attempt_at = now + retry_delay(delivery.attempts)
        label = "failed"
    db.session.add(
        WebhookAttempt(
            delivery_id=delivery.id,
            attempted_at=now,
            outcome=label,
            status_code=outcome.status_code,
            latency_ms=outcome.latency_ms,
            error=outcome.error,
        )
    )
    db.session.flush()
    _forget_email_once_sent(delivery.event)
    db.session.commit()
    return label


def _forget_email_once_sent(event: WebhookEvent) -> None:
    """Drop the event's email once no delivery of it is pending any more."""
    if event.email_encrypted is None:
        return
    pending = db.session.scalar(
        select(func.count())
        .select_from(WebhookDelivery)
        .where(WebhookDelivery.event_id == event.id, WebhookDelivery.status == "pending")
    )
    if not pending:
        event.email_encrypted = None


def dispatch_once(limit: int = 20) -> dict[str, int]:
    """Claim what is due and send it; return how many ended in each outcome."""
    counts: dict[str, int] = {}
    for claim in claim_due(limit):
        outcome = deliver(claim)
        if outcome:
            counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def send_again(delivery: WebhookDelivery) -> WebhookDelivery:
    """Queue an event for its endpoint once more (a new delivery, the same message id)."""
    again = WebhookDelivery(
        event_id=delivery.event_id, endpoint_id=delivery.endpoint_id, next_attempt_at=now_utc()
    )
    db.session.add(again)
    db.session.flush()
    return again


def delivery_counts() -> dict[str, int]:
    """Attempts so far by outcome, from the database (for /metrics)."""
    rows = db.session.execute(
        select(WebhookAttempt.outcome, func.count()).group_by(WebhookAttempt.outcome)
    )
    return dict(rows.all())


def endpoints_of(site: Site) -> list[WebhookEndpoint]:
    return db.session.scalars(
        select(WebhookEndpoint)
        .where(WebhookEndpoint.site_id == site.id)
        .order_by(WebhookEndpoint.id)
    ).all()


def recent_deliveries(site: Site, limit: int = 100) -> list[WebhookDelivery]:
    """The site's latest deliveries, newest first, for the delivery log."""
    return db.session.scalars(
        select(WebhookDelivery)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(WebhookEndpoint.site_id == site.id)
        .order_by(WebhookDelivery.id.desc())
        .limit(limit)
    ).all()


def set_endpoint_active(endpoint: WebhookEndpoint, is_active: bool) -> None:
    """Pause or resume an endpoint: paused, it gets no new events."""
    db.session.execute(
        update(WebhookEndpoint).where(WebhookEndpoint.id == endpoint.id).values(is_active=is_active)
    )
    transaction_cache(ENDPOINTS_READ).clear()
