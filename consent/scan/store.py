"""Scans in the database: what to scan for a site, keeping results, comparing, the inventory."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select

from consent.db import db, now_utc
from consent.errors import InvalidRequest
from consent.models import Purpose, Scan, Site
from consent.scan.classify import declared_inventory
from consent.scan.findings import Finding, find_issues
from consent.scan.observations import Observations, ScanPlan, origin_of
from consent.scan.report import build_report
from consent.sites import DEFAULT_TEXTS, ORIGIN_PATTERN

MAX_PAGES = 200
MAX_TIME_LIMIT = 3600
DEFAULT_TIME_LIMIT = 300


def plan_scan(
    site: Site,
    urls: list[str],
    *,
    allow_hosts: list[str] | None = None,
    max_pages: int = 10,
    time_limit: float = DEFAULT_TIME_LIMIT,
    page_timeout: float = 15,
) -> ScanPlan:
    """Check the URLs (http(s), on the site's own origins) and say how to scan them."""
    allow_hosts = [host.strip().lower() for host in allow_hosts or [] if host.strip()]
    for host in allow_hosts:
        if not ORIGIN_PATTERN.match(f"http://{host}"):
            raise InvalidRequest(
                "allow_host", f"{host!r} is not a host name like staging.example.com"
            )
    if not urls:
        raise InvalidRequest("urls", "Give at least one URL to start from.")
    origins = [origin_of(origin) for origin in site.allowed_origins]
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidRequest("urls", f"{url!r} is not an http(s) URL.")
        if origin_of(url) not in origins and parts.hostname.lower() not in allow_hosts:
            raise InvalidRequest(
                "urls",
                f"{url!r} is not on an allowed origin of {site.key!r} "
                f"({', '.join(origins) or 'none'}); add the origin or pass --allow-host.",
            )
    if not 1 <= max_pages <= MAX_PAGES:
        raise InvalidRequest("pages", f"Scan 1 to {MAX_PAGES} pages.")
    if not 10 <= time_limit <= MAX_TIME_LIMIT:
        raise InvalidRequest("time_limit", f"The time limit is 10 to {MAX_TIME_LIMIT} seconds.")
    if not 1 <= page_timeout <= 120:
        raise InvalidRequest("page_timeout", "A page may take 1 to 120 seconds to load.")
    texts = [{**DEFAULT_TEXTS["en"], **site.texts.get(lang, {})} for lang in site.languages]
    return ScanPlan(
        site_key=site.key,
        start_urls=list(urls),
        site_hosts=sorted({urlsplit(o).hostname or "" for o in origins} | set(allow_hosts)),
        allowed_origins=origins,
        allowed_hosts=allow_hosts,
        accept_labels=sorted({t["accept_all"] for t in texts}),
        reject_labels=sorted({t["reject_all"] for t in texts}),
        max_pages=max_pages,
        time_limit=time_limit,
        page_timeout=page_timeout,
    )


def assess(
    site: Site, plan: ScanPlan, seen: Observations, started_at: datetime
) -> tuple[list[Finding], dict[str, Any]]:
    """Compare what was seen with the site's inventory; return the findings and the report."""
    findings = find_issues(seen, declared_inventory(site.purposes), plan.storage_key)
    return findings, build_report(site.key, started_at, now_utc(), seen, findings)


def start_scan(plan: ScanPlan, site: Site, started_by: str) -> Scan:
    """Add a running scan of a site, to be filled in when it finishes."""
    scan = Scan(
        site=site,
        started_by=started_by,
        status="running",
        start_urls=list(plan.start_urls),
        progress_total=3 * plan.max_pages,
    )
    db.session.add(scan)
    db.session.flush()
    return scan


def finish_scan(scan: Scan, report: dict[str, Any]) -> Scan:
    """Store the outcome of a scan."""
    scan.status = "done"
    scan.finished_at = now_utc()
    scan.pages = report["pages"]
    scan.findings = report["findings"]
    scan.report = report
    scan.progress_done = scan.progress_total
    db.session.flush()
    return scan


def is_stalled(scan: Scan) -> bool:
    """Whether a running scan is long past any time limit (its process died)."""
    limit = timedelta(seconds=MAX_TIME_LIMIT + 120)
    return scan.status == "running" and now_utc() - scan.started_at > limit


def fail_scan(scan: Scan, error: str) -> Scan:
    """Mark a scan as failed, with why in one line."""
    scan.status = "failed"
    scan.finished_at = now_utc()
    scan.error = error[:500]
    db.session.flush()
    return scan


def list_scans(site: Site, limit: int = 50) -> list[Scan]:
    """The site's latest scans, newest first."""
    return list(
        db.session.scalars(
            select(Scan)
            .where(Scan.site_id == site.id)
            .order_by(Scan.started_at.desc(), Scan.id.desc())
            .limit(limit)
        )
    )


def previous_scan(scan: Scan) -> Scan | None:
    """The finished scan of the same site just before this one."""
    return db.session.scalars(
        select(Scan)
        .where(Scan.site_id == scan.site_id, Scan.status == "done", Scan.id < scan.id)
        .order_by(Scan.id.desc())
        .limit(1)
    ).first()


def _identity(finding: dict[str, Any]) -> tuple[str, str, str, str]:
    return (finding["level"], finding["kind"], finding["subject"], finding["pass_name"] or "")


def compare_scans(scan: Scan, previous: Scan | None) -> dict[str, list[dict[str, Any]]]:
    """What is new in a scan's findings and what went away since the previous one."""
    before = {_identity(f): f for f in previous.findings} if previous else {}
    now = {_identity(f): f for f in scan.findings}
    return {
        "new": [f for key, f in now.items() if key not in before],
        "gone": [f for key, f in before.items() if key not in now],
    }


def suggested_rows(
    scan: Scan, purpose: Purpose, names: list[str] | None = None
) -> list[dict[str, Any]]:
    """Inventory rows for a purpose from a scan's undeclared cookies, in its cookie shape.

    With ``names``, those cookies whatever purpose was suggested (the admin chose this
    one); without, every undeclared cookie suggested for this purpose.
    """
    declared = {(row["name"], bool(row.get("is_prefix"))) for row in purpose.cookies}
    rows = []
    for finding in scan.findings:
        suggestion = finding.get("suggestion")
        if finding["level"] != "undeclared" or not suggestion:
            continue
        if names is not None and finding["subject"] not in names:
            continue
        if names is None and suggestion.get("purpose") != purpose.key:
            continue
        key = (suggestion["name"], suggestion["is_prefix"])
        if key in declared:
            continue
        declared.add(key)
        rows.append(
            {
                "name": suggestion["name"],
                "is_prefix": suggestion["is_prefix"],
                "provider": suggestion["provider"] or "",
                "duration": suggestion["duration"],
                "description": suggestion["description"] or "",
            }
        )
    return rows
