"""People's rights over their data: access and export, correction, erasure.

Every export, correction and erasure is written to the access log with who did it
and why (``consent.accesslog``).
"""

from __future__ import annotations

import csv
import io
from typing import Any

from sqlalchemy import select

from consent import archive, identifiers, webhooks
from consent.accesslog import log_access
from consent.chain import append_record, lock_chain
from consent.check import describe_state
from consent.db import db, now_utc
from consent.errors import Conflict, InvalidRequest
from consent.models import (
    ConsentRecord,
    ErasedIdentifier,
    PolicyVersion,
    Site,
    Subject,
    Visitor,
)
from consent.schemas import BannerVersionSchema, PurposeStateSchema, RecordSchema
from consent.subjects import find_subject_by, set_identifier
from consent.visitors import find_visitor

IDENTIFIER_KINDS = ("email", "user_id")


def find_subject(
    site: Site,
    *,
    email: str | None = None,
    user_id: str | None = None,
    visitor_id: str | None = None,
) -> Subject | None:
    """The subject behind exactly one of an email, a user id or a visitor id."""
    if email is not None:
        return find_subject_by(site, "email", email)
    if user_id is not None:
        return find_subject_by(site, "user_id", user_id)
    if visitor_id is not None:
        visitor = find_visitor(site, visitor_id)
        return visitor.subject if visitor else None
    raise InvalidRequest("email", "Give an email, a user_id or a visitor id.")


def is_erased_identifier(site: Site, kind: str, value: str) -> bool:
    """Whether this email or user id belonged to someone who was erased."""
    digests = identifiers.lookup_digests(kind, site.id, value)
    return (
        db.session.scalars(
            select(ErasedIdentifier.digest).where(
                ErasedIdentifier.site_id == site.id, ErasedIdentifier.digest.in_(digests)
            )
        ).first()
        is not None
    )


def subject_history(site: Site, subject: Subject) -> list[ConsentRecord]:
    return db.session.scalars(
        select(ConsentRecord)
        .where(
            ConsentRecord.site_id == site.id,
            ConsentRecord.subject_pseudonym == subject.pseudonym,
        )
        .order_by(ConsentRecord.sequence)
    ).all()


def export_subject(
    site: Site, subject: Subject, actor: str, reason: str | None = None
) -> dict[str, Any]:
    """Everything the service holds about a subject, logged as an export."""
    log_access(site, actor, "export", subject.pseudonym, reason=reason)
    visitors = db.session.scalars(
        select(Visitor.visitor_id).where(Visitor.subject_id == subject.id)
    ).all()
    history = subject_history(site, subject)
    return {
        "site": site.key,
        "exported_at": now_utc().isoformat(),
        "subject": {
            "pseudonym": subject.pseudonym,
            "email": _decrypted(subject.email_encrypted),
            "user_id": _decrypted(subject.user_id_encrypted),
            "visitor_ids": sorted(visitors),
            "created_at": subject.created_at.isoformat(),
            "erased_at": subject.erased_at.isoformat() if subject.erased_at else None,
        },
        "state": {
            purpose: PurposeStateSchema().dump(state)
            for purpose, state in describe_state(site, subject).items()
        },
        "history": RecordSchema(many=True).dump(history),
        "banner_versions": _banner_versions_of(site, history),
    }


def _banner_versions_of(site: Site, history: list[ConsentRecord]) -> dict[str, Any]:
    """The archived banner behind each record's config_hash, ready for JSON."""
    versions = archive.banner_versions_by_hash(
        site, {record.config_hash for record in history if record.config_hash}
    )
    return {
        config_hash: BannerVersionSchema().dump(archive.describe_banner_version(version))
        for config_hash, version in versions.items()
    }


def _decrypted(blob: bytes | None) -> str | None:
    return identifiers.decrypt(blob) if blob else None


CSV_COLUMNS = [
    "section",
    "name",
    "value",
    "purpose",
    "service",
    "granted",
    "allowed",
    "reason",
    "time",
    "expires_at",
    "sequence",
    "event",
    "source",
    "policy_version",
    "gpc",
    "ip",
    "hash",
    "previous_hash",
]


def export_as_csv(export: dict[str, Any]) -> str:
    """One portable CSV: subject fields, then current state, then each decision."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for name, value in export["subject"].items():
        if isinstance(value, list):
            value = " ".join(value)
        writer.writerow({"section": "subject", "name": name, "value": value})
    for purpose, state in export["state"].items():
        writer.writerow(
            {
                "section": "state",
                "purpose": purpose,
                "allowed": state["allowed"],
                "reason": state["reason"],
                "time": state["decided_at"],
                "expires_at": state["expires_at"],
            }
        )
        for service, verdict in state["services"].items():
            writer.writerow(
                {
                    "section": "state",
                    "purpose": purpose,
                    "service": service,
                    "allowed": verdict["allowed"],
                    "reason": verdict["reason"],
                    "time": verdict["decided_at"],
                    "expires_at": verdict["expires_at"],
                }
            )
    for record in export["history"]:
        common = {
            "section": "history",
            "time": record["recorded_at"],
            "sequence": record["sequence"],
            "event": record["event"],
            "source": record["source"],
            "policy_version": record["policy_version"],
            "gpc": record["gpc"],
            "ip": record["ip"],
            "hash": record["hash"],
            "previous_hash": record["previous_hash"],
        }
        for decision in record["decisions"] or [{}]:
            services = decision.get("services", {})
            writer.writerow(
                {**common, "purpose": decision.get("purpose"), "granted": decision.get("granted")}
            )
            for service, granted in services.items():
                writer.writerow(
                    {
                        **common,
                        "purpose": decision["purpose"],
                        "service": service,
                        "granted": granted,
                    }
                )
    return out.getvalue()


def consent_receipts(
    site: Site, subject: Subject, actor: str, reason: str | None = None
) -> list[dict[str, Any]]:
    """Each record as a consent receipt shaped after ISO/IEC TS 27560 and Kantara CR 1.1."""
    log_access(
        site, actor, "export", subject.pseudonym, reason=reason, details={"format": "receipts"}
    )
    policies = {
        policy.version: policy
        for policy in db.session.scalars(
            select(PolicyVersion).where(PolicyVersion.site_id == site.id)
        )
    }
    purposes = {purpose.key: purpose for purpose in site.purposes}
    history = subject_history(site, subject)
    banners = _banner_versions_of(site, history)
    receipts = []
    for record in history:
        policy = policies.get(record.policy_version)
        receipts.append(
            {
                "version": "KI-CR-v1.1.0",
                "receipt_id": record.record_hash,
                "record_id": record.id,
                "consent_timestamp": record.recorded_at.isoformat(),
                "collection_method": record.source,
                "event_type": record.event,
                "language": record.language,
                "pii_principal_id": subject.pseudonym,
                "pii_controllers": [
                    {
                        "pii_controller": site.controller_name or site.name,
                        "contact": site.controller_contact,
                    }
                ],
                "policy_url": policy.url if policy else None,
                "policy_version": record.policy_version,
                "purposes": [
                    {
                        "purpose": decision["purpose"],
                        "purpose_category": purposes[decision["purpose"]].kind
                        if decision["purpose"] in purposes
                        else None,
                        "consent_type": "explicit",
                        "state": "granted" if decision["granted"] else "refused",
                        "services": decision.get("services", {}),
                    }
                    for decision in record.decisions
                ],
                "gpc": record.is_gpc,
                "previous_receipt_id": record.previous_hash,
                "banner_version": banners.get(record.config_hash),
            }
        )
    return receipts


def correct_subject(
    site: Site,
    subject: Subject,
    field: str,
    new_value: str | None,
    actor: str,
    reason: str | None = None,
) -> ConsentRecord:
    """Change or remove a subject's email or user id; record that it changed, not to what."""
    if field not in IDENTIFIER_KINDS:
        raise InvalidRequest("field", "Only email and user_id can be corrected.")
    lock_chain(site, subject)
    if subject.erased_at is not None:
        raise Conflict("This subject was erased; there is nothing to correct.")
    if new_value is not None:
        owner = find_subject_by(site, field, new_value)
        if owner is not None and owner.id != subject.id:
            raise Conflict(f"Another subject of this site already has this {field}.")
    had_value = getattr(subject, f"{field}_digest") is not None
    set_identifier(subject, field, new_value)
    db.session.flush()
    action = "removed" if new_value is None else ("changed" if had_value else "added")
    log_access(
        site,
        actor,
        "correct",
        subject.pseudonym,
        reason=reason,
        details={"field": field, "action": action},
    )
    return append_record(
        site,
        subject,
        event="correction",
        source="api",
        details={"field": field, "action": action},
    )


def erase_subject(
    site: Site, subject: Subject, actor: str, reason: str | None = None
) -> ConsentRecord | None:
    """Forget who the subject is; keep the pseudonymous history; deny every check.

    Removes the email and user id (keeping only their keyed hashes as suppression
    entries), drops the current state, and appends an erasure record. Erasing twice
    appends nothing the second time.
    """
    lock_chain(site, subject)
    log_access(site, actor, "erase", subject.pseudonym, reason=reason)
    if subject.erased_at is not None:
        return None
    # Before the email goes: an endpoint marked to receive it erases by it.
    webhooks.emit_event(
        site,
        "subject.erased",
        {"subject": subject.pseudonym, "at": now_utc().isoformat()},
        subject=subject,
    )
    for kind in IDENTIFIER_KINDS:
        for value_digest in _all_digests_of(subject, kind):
            if db.session.get(ErasedIdentifier, (site.id, value_digest)) is None:
                db.session.add(ErasedIdentifier(site_id=site.id, digest=value_digest))
        set_identifier(subject, kind, None)
    # As erased_at is set the database drops the subject's current states, and refuses
    # any written for it later (migration 0016): no check finds a decision of it.
    subject.erased_at = now_utc()
    db.session.flush()
    return append_record(site, subject, event="erasure", source="api")


def _all_digests_of(subject: Subject, kind: str) -> list[str]:
    """The identifier's keyed hash under every configured key, so lookups keep matching."""
    blob = getattr(subject, f"{kind}_encrypted")
    if blob is None:
        return []
    return identifiers.lookup_digests(kind, subject.site_id, identifiers.decrypt(blob))
