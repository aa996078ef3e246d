"""Compare what a scan saw with what the site declares, and say what is wrong, with evidence.

Four levels, from the least to the most serious (``--fail-on`` takes one of them):

* ``stale``: a declared cookie that no pass saw (the inventory promises too much);
* ``lifetime``: a cookie that lives longer than its declared duration;
* ``undeclared``: a cookie the site sets but does not declare;
* ``violation``: a non-necessary cookie or storage key, or a request to a third-party
  host, before any choice or after "Reject all".

Names are classified by the site's inventory, then the Open Cookie Database; a name
neither knows is ``unknown`` (undeclared, but not a violation: nothing says it tracks).
The banner's own storage key and anything declared under a required purpose are never
findings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from consent.cookiedb import look_up_cookie
from consent.scan.classify import (
    SESSION,
    Declared,
    classify,
    describe_lifetime,
    find_declared,
    parse_duration,
)
from consent.scan.observations import PASS_TITLES, PASSES, Observations

LEVELS = ("stale", "lifetime", "undeclared", "violation")
#: A cookie may outlive its declared duration by this much (clocks, rounding).
LIFETIME_SLACK = timedelta(days=1)
SOURCE_TITLES = {"inventory": "declared", "database": "Open Cookie Database", "unknown": "unknown"}


@dataclass
class Finding:
    """One thing wrong, with where and when it was seen."""

    level: str
    #: "cookie", "storage" or "request".
    kind: str
    #: The cookie name, storage key or third-party host.
    subject: str
    #: The pass it was seen in (None for what no pass saw).
    pass_name: str | None
    page: str | None
    purpose: str
    #: Where the purpose comes from: "inventory", "database" or "unknown".
    source: str
    message: str
    evidence: dict[str, Any]
    #: For an undeclared cookie: the inventory row to add, for the admin to confirm.
    suggestion: dict[str, Any] | None = None

    @property
    def identity(self) -> tuple[str, str, str, str]:
        """What makes it the same finding in another scan."""
        return (self.level, self.kind, self.subject, self.pass_name or "")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def is_at_or_above(level: str, threshold: str) -> bool:
    return LEVELS.index(level) >= LEVELS.index(threshold)


def find_issues(seen: Observations, inventory: list[Declared], storage_key: str) -> list[Finding]:
    """Return every finding of a scan, the most serious first."""
    findings = (
        _violations(seen, inventory, storage_key)
        + _undeclared(seen, inventory)
        + _lifetimes(seen, inventory)
        + _stale(seen, inventory)
    )
    pass_order = {name: index for index, name in enumerate(PASSES)}
    findings.sort(
        key=lambda f: (
            -LEVELS.index(f.level),
            f.kind,
            f.subject,
            pass_order.get(f.pass_name or "", 9),
        )
    )
    return findings


def _violations(seen: Observations, inventory, storage_key) -> list[Finding]:
    """What was set or sent before a choice and after Reject all: each once per pass."""
    found: dict[tuple, Finding] = {}

    def add(kind: str, subject: str, observed, purpose_class, message: str, evidence) -> None:
        found.setdefault(
            (kind, subject, observed.pass_name),
            Finding(
                level="violation",
                kind=kind,
                subject=subject,
                pass_name=observed.pass_name,
                page=observed.page,
                purpose=purpose_class.purpose if purpose_class else "unknown",
                source=purpose_class.source if purpose_class else "unknown",
                message=message,
                evidence={kind: evidence},
            ),
        )

    def optional_class(name: str):
        kind = classify(inventory, name)
        return None if kind.is_necessary or kind.purpose == "unknown" else kind

    for cookie in seen.cookies:
        if cookie.pass_name != "accept" and (kind := optional_class(cookie.name)):
            add(
                "cookie",
                cookie.name,
                cookie,
                kind,
                f"{kind.purpose} cookie ({_origin_of_class(kind)}) set "
                f"{PASS_TITLES[cookie.pass_name]}"
                + (f", by {cookie.set_by}" if cookie.set_by else ""),
                _cookie_evidence(cookie),
            )
    for item in seen.storage:
        if item.pass_name == "accept" or item.key == storage_key:
            continue
        if kind := optional_class(item.key):
            add(
                "storage",
                item.key,
                item,
                kind,
                f"{kind.purpose} {item.kind} key ({_origin_of_class(kind)}) written "
                f"{PASS_TITLES[item.pass_name]} by {item.origin}",
                asdict(item),
            )
    for request in seen.requests:
        if request.pass_name != "accept":
            add(
                "request",
                request.host,
                request,
                None,
                f"{request.count} request(s) to third-party host {request.host} "
                f"({request.resource_type}) {PASS_TITLES[request.pass_name]}",
                asdict(request),
            )
    return list(found.values())


def _undeclared(seen: Observations, inventory) -> list[Finding]:
    findings: dict[str, Finding] = {}
    for cookie in _in_pass_order(seen.cookies):
        if find_declared(inventory, cookie.name) is not None:
            continue
        if cookie.name in findings:
            continue
        kind = classify(inventory, cookie.name)
        known = look_up_cookie(cookie.name)
        lifetimes = [c.lifetime_seconds for c in seen.cookies if c.name == cookie.name]
        longest = max((s for s in lifetimes if s is not None), default=None)
        findings[cookie.name] = Finding(
            level="undeclared",
            kind="cookie",
            subject=cookie.name,
            pass_name=cookie.pass_name,
            page=cookie.page,
            purpose=kind.purpose,
            source=kind.source,
            message=(
                f"not in the inventory; first seen {PASS_TITLES[cookie.pass_name]}"
                + (f" ({kind.purpose}, {_origin_of_class(kind)})" if known else "")
            ),
            evidence={"cookie": _cookie_evidence(cookie)},
            suggestion={
                "purpose": kind.purpose if known else None,
                "name": known.name if known and known.is_prefix else cookie.name,
                "is_prefix": bool(known and known.is_prefix),
                "provider": kind.provider,
                "duration": describe_lifetime(longest),
                "description": kind.description,
            },
        )
    return list(findings.values())


def _lifetimes(seen: Observations, inventory) -> list[Finding]:
    findings: dict[str, Finding] = {}
    for cookie in _in_pass_order(seen.cookies):
        declared = find_declared(inventory, cookie.name)
        if declared is None or cookie.name in findings or cookie.lifetime_seconds is None:
            continue
        allowed = parse_duration(declared.duration)
        if allowed is None:
            continue
        lifetime = timedelta(seconds=cookie.lifetime_seconds)
        if allowed != SESSION and lifetime <= allowed + LIFETIME_SLACK:
            continue
        findings[cookie.name] = Finding(
            level="lifetime",
            kind="cookie",
            subject=cookie.name,
            pass_name=cookie.pass_name,
            page=cookie.page,
            purpose=declared.purpose,
            source="inventory",
            message=(
                f"lives {describe_lifetime(cookie.lifetime_seconds)}, "
                f"declared {declared.duration!r} (as {declared.label})"
            ),
            evidence={"cookie": _cookie_evidence(cookie), "declared": asdict(declared)},
        )
    return list(findings.values())


def _stale(seen: Observations, inventory) -> list[Finding]:
    names = {cookie.name for cookie in seen.cookies} | {item.key for item in seen.storage}
    return [
        Finding(
            level="stale",
            kind="cookie",
            subject=declared.label,
            pass_name=None,
            page=None,
            purpose=declared.purpose,
            source="inventory",
            message=f"declared under {declared.purpose} but never seen in any pass",
            evidence={"declared": asdict(declared)},
        )
        for declared in inventory
        if not any(declared.matches(name) for name in names)
    ]


def _in_pass_order(cookies):
    order = {name: index for index, name in enumerate(PASSES)}
    return sorted(cookies, key=lambda cookie: order[cookie.pass_name])


def _origin_of_class(kind) -> str:
    if kind.source == "database" and kind.provider:
        return f"{SOURCE_TITLES[kind.source]}: {kind.provider}"
    return SOURCE_TITLES[kind.source]


def _cookie_evidence(cookie) -> dict[str, Any]:
    data = asdict(cookie)
    data["lifetime"] = describe_lifetime(cookie.lifetime_seconds)
    return data
