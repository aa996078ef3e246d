"""The rights-request register: receipt, verification, deadline, completion.

A request arrives from the site's public form, from the site's backend for a logged-in
user, or by email (entered in the admin or with the CLI). Identity is verified by a
signed link emailed to the address given, or vouched for by the site's backend. The
answer is due one month after receipt (GDPR Art. 12(3)), three months once extended
with a reason. Completing an export emails a signed, expiring download link; completing
an erasure runs the erasure; completing an objection records a refusal of every
marketing purpose. Every step is written to the access log.
"""

from __future__ import annotations

import base64
import calendar
import secrets
from datetime import datetime
from typing import Any

from flask import current_app, url_for
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select

from consent import identifiers, rights, webhooks
from consent.accesslog import log_access
from consent.db import db, now_utc
from consent.errors import Conflict, InvalidRequest
from consent.ledger import record_decision
from consent.mail import send_mail
from consent.models import RIGHTS_KINDS, RightsRequest, Site, Subject
from consent.subjects import find_subject_by

VERIFY_SALT = "consent.rights-request-verify"
DOWNLOAD_SALT = "consent.rights-request-download"
#: How long the emailed links work.
VERIFY_LINK_SECONDS = 7 * 24 * 3600
DOWNLOAD_LINK_SECONDS = 7 * 24 * 3600
OPEN_STATES = ("received", "verified", "extended")
CHANNELS = ("web", "email", "admin", "cli", "api")


def new_reference() -> str:
    """A reference people read out and type (emails, the CLI): 16 of A-Z and 2-7.

    Never a leading dash, which a command line would take for an option.
    """
    return base64.b32encode(secrets.token_bytes(10)).decode()


def add_months(moment: datetime, months: int) -> datetime:
    """The same day ``months`` later, or the month's last day if it has fewer."""
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def _serializer(salt: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=salt)


def public_link(endpoint: str, **values: Any) -> str:
    """An absolute link from the configured public address, never the Host header."""
    return current_app.config["PUBLIC_URL"].rstrip("/") + url_for(endpoint, **values)


def _log(request: RightsRequest, site: Site, actor: str, step: str, reason: str | None = None):
    """Write a step to the access log and tell the site's webhooks, in one transaction."""
    log_access(
        site,
        actor,
        "rights_request",
        request.subject_pseudonym,
        reason=reason,
        details={"reference": request.reference, "kind": request.kind, "step": step},
    )
    webhooks.emit_event(
        site,
        f"rights_request.{step}",
        {
            "reference": request.reference,
            "kind": request.kind,
            "state": request.state,
            "subject": request.subject_pseudonym,
            "due_at": request.due_at.isoformat() if request.due_at else None,
            "at": now_utc().isoformat(),
        },
    )


def email_of(request: RightsRequest) -> str | None:
    return identifiers.decrypt(request.email_encrypted) if request.email_encrypted else None


def receive_request(
    site: Site,
    kind: str,
    channel: str,
    actor: str,
    *,
    email: str | None = None,
    subject: Subject | None = None,
    message: str | None = None,
) -> RightsRequest:
    """Register a request; email the verification link unless the backend vouches for it.

    ``subject`` is given by the site's backend for a logged-in user: that is the
    verification. Otherwise ``email`` is needed, and receives the link.
    """
    if kind not in RIGHTS_KINDS:
        raise InvalidRequest("kind", f"Use one of: {', '.join(RIGHTS_KINDS)}.")
    if subject is None and not email:
        raise InvalidRequest("email", "Give the email address to verify the request with.")
    if not email and subject is not None and subject.email_encrypted:
        email = identifiers.decrypt(subject.email_encrypted)  # where the answer goes
    if email:
        email = identifiers.normalise_email(email)
    now = now_utc()
    request = RightsRequest(
        site_id=site.id,
        reference=new_reference(),
        kind=kind,
        channel=channel,
        state="received",
        email_encrypted=identifiers.encrypt(email) if email else None,
        message=message or None,
        received_at=now,
        due_at=add_months(now, 1),
    )
    db.session.add(request)
    db.session.flush()
    _log(request, site, actor, "received")
    if subject is not None:
        _mark_verified(request, site, subject, "site_backend", actor)
        return request
    token = _serializer(VERIFY_SALT).dumps({"request": request.reference})
    link = public_link("rights_pages.verify", token=token)
    send_mail(
        email,
        f"Confirm your {kind} request to {site.name}",
        f"We received a request to exercise your right of {kind} with {site.name}.\n\n"
        f"If you made it, confirm it here (the link works for 7 days):\n{link}\n\n"
        f"If you did not, ignore this email. Reference: {request.reference}\n",
    )
    return request


def _mark_verified(
    request: RightsRequest, site: Site, subject: Subject | None, method: str, actor: str
):
    request.state = "verified"
    request.verified_at = now_utc()
    request.verified_by = method
    request.subject_pseudonym = subject.pseudonym if subject else None
    db.session.flush()
    _log(request, site, actor, "verified")


def read_verify_token(token: str) -> RightsRequest | None:
    """The request a verification link is for, or None if it is not ours or expired."""
    try:
        payload = _serializer(VERIFY_SALT).loads(token, max_age=VERIFY_LINK_SECONDS)
    except BadSignature:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("request"), str):
        return None
    return find_request(payload["request"])


def verify_by_link(token: str) -> RightsRequest | None:
    """Mark the request verified: the person followed the link sent to their address."""
    request = read_verify_token(token)
    if request is None:
        return None
    if request.state != "received":
        return request
    site = db.session.get(Site, request.site_id)
    subject = find_subject_by(site, "email", email_of(request))
    _mark_verified(request, site, subject, "email_link", "person")
    return request


def find_request(reference: str) -> RightsRequest | None:
    return db.session.scalars(
        select(RightsRequest).where(RightsRequest.reference == reference)
    ).first()


def _open(request: RightsRequest) -> None:
    if request.state not in OPEN_STATES:
        raise Conflict(f"This request is {request.state} already.")


def _reason(reason: str | None) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise InvalidRequest("reason", "Say why: the person is told.")
    return reason


def extend_request(request: RightsRequest, reason: str | None, actor: str) -> RightsRequest:
    """Extend the deadline to three months from receipt, with the reason the person is told."""
    _open(request)
    if request.state == "extended":
        raise Conflict("This request was extended already; it cannot be extended again.")
    request.extension_reason = _reason(reason)
    request.state = "extended"
    request.extended_at = now_utc()
    request.due_at = add_months(request.received_at, 3)
    db.session.flush()
    site = db.session.get(Site, request.site_id)
    _log(request, site, actor, "extended", request.extension_reason)
    _tell(request, site, f"We need more time: {request.extension_reason}", "extended")
    return request


def refuse_request(request: RightsRequest, reason: str | None, actor: str) -> RightsRequest:
    """Refuse the request, with the reason the person is told."""
    _open(request)
    request.refusal_reason = _reason(reason)
    request.state = "refused"
    request.refused_at = now_utc()
    db.session.flush()
    site = db.session.get(Site, request.site_id)
    _log(request, site, actor, "refused", request.refusal_reason)
    _tell(request, site, f"We cannot act on it: {request.refusal_reason}", "refused")
    return request


def complete_request(request: RightsRequest, actor: str) -> str | None:
    """Carry out a verified request; return the download link of an export or access.

    Erasure erases the subject; objection records a refusal of every optional
    communication purpose and of ``marketing``; correction is done by hand first (the
    admin's person page or the API) and only closed here.
    """
    _open(request)
    if request.state == "received":
        raise Conflict("The person's identity is not verified yet.")
    site = db.session.get(Site, request.site_id)
    subject = _subject_of(request, site)
    reason = f"rights request {request.reference}"
    link = None
    if subject is not None and request.kind == "erasure":
        rights.erase_subject(site, subject, actor, reason)
    elif subject is not None and request.kind == "objection":
        refusals = [
            {"purpose": purpose.key, "granted": False}
            for purpose in site.purposes
            if not purpose.is_required
            and (purpose.kind == "communication" or purpose.key == "marketing")
        ]
        if refusals and subject.erased_at is None:
            record_decision(site, subject, refusals, source="api")
    elif request.kind in ("access", "export"):
        token = _serializer(DOWNLOAD_SALT).dumps({"request": request.reference})
        link = public_link("rights_pages.download", token=token)
    request.state = "completed"
    request.completed_at = now_utc()
    db.session.flush()
    _log(request, site, actor, "completed")
    done = "It is done."
    if link:
        done = f"Download your data here (the link works for 7 days):\n{link}"
    _tell(request, site, done, "completed")
    return link


def _subject_of(request: RightsRequest, site: Site) -> Subject | None:
    if request.subject_pseudonym:
        return db.session.scalars(
            select(Subject).where(
                Subject.site_id == site.id, Subject.pseudonym == request.subject_pseudonym
            )
        ).first()
    email = email_of(request)
    return find_subject_by(site, "email", email) if email else None


def _tell(request: RightsRequest, site: Site, news: str, state: str) -> None:
    email = email_of(request)
    if email:
        send_mail(
            email,
            f"Your {request.kind} request to {site.name}: {state}",
            f"{news}\n\nReference: {request.reference}\n",
        )


def read_download_token(token: str) -> RightsRequest | None:
    """The completed request a download link is for, or None (forged, expired, not done)."""
    try:
        payload = _serializer(DOWNLOAD_SALT).loads(token, max_age=DOWNLOAD_LINK_SECONDS)
    except BadSignature:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("request"), str):
        return None
    request = find_request(payload["request"])
    return request if request is not None and request.state == "completed" else None


def download_export(token: str) -> dict[str, Any] | None:
    """What the person's download link hands them: their export, logged."""
    request = read_download_token(token)
    if request is None:
        return None
    site = db.session.get(Site, request.site_id)
    subject = _subject_of(request, site)
    reason = f"rights request {request.reference}"
    if subject is None:
        log_access(site, "person", "export", None, reason=reason, details={"found": False})
        return {"site": site.key, "exported_at": now_utc().isoformat(), "subject": None}
    return rights.export_subject(site, subject, "person", reason)


def site_requests(site: Site, *, overdue_only: bool = False) -> list[RightsRequest]:
    """The site's requests, open ones first by due date, then the closed newest first."""
    query = select(RightsRequest).where(RightsRequest.site_id == site.id)
    if overdue_only:
        query = query.where(RightsRequest.state.in_(OPEN_STATES), RightsRequest.due_at < now_utc())
    rows = db.session.scalars(query.order_by(RightsRequest.due_at)).all()
    open_rows = [row for row in rows if row.state in OPEN_STATES]
    closed = sorted(
        (row for row in rows if row.state not in OPEN_STATES),
        key=lambda row: row.received_at,
        reverse=True,
    )
    return open_rows + closed


def is_overdue(request: RightsRequest, now: datetime | None = None) -> bool:
    return request.state in OPEN_STATES and request.due_at < (now or now_utc())
