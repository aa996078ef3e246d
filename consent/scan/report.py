"""Show a scan: a table for the terminal, and the JSON report for CI and the admin."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from consent.scan.findings import LEVELS, Finding
from consent.scan.observations import PASS_TITLES, Observations


def build_report(
    site_key: str,
    started_at: datetime,
    finished_at: datetime,
    seen: Observations,
    findings: list[Finding],
) -> dict[str, Any]:
    """Return the whole scan as one JSON-ready document."""
    return {
        "site": site_key,
        "started_at": started_at.isoformat(),
        "finished_at": finished_at.isoformat(),
        "pages": seen.pages,
        "passes": list(PASS_TITLES),
        "counts": count_levels(findings),
        "findings": [finding.to_json() for finding in findings],
        "problems": [problem.__dict__ for problem in seen.problems],
        "observed": {
            "cookies": [cookie.__dict__ for cookie in seen.cookies],
            "storage": [item.__dict__ for item in seen.storage],
            "requests": [request.__dict__ for request in seen.requests],
            "service_origin": seen.service_origin,
        },
    }


def count_levels(findings: list[Finding]) -> dict[str, int]:
    counts = Counter(finding.level for finding in findings)
    return {level: counts.get(level, 0) for level in reversed(LEVELS)}


def short_page(url: str | None) -> str:
    """A page as its path and query (the host is the same for the whole scan)."""
    if not url:
        return "-"
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def format_table(report: dict[str, Any]) -> str:
    """Render the findings and problems as plain-text tables."""
    lines = [
        f"Scanned {len(report['pages'])} page(s) of {report['site']!r} in 3 passes "
        f"({', '.join(PASS_TITLES.values())})."
    ]
    rows = [
        (
            finding["level"],
            finding["kind"],
            finding["subject"],
            PASS_TITLES.get(finding["pass_name"], "-"),
            short_page(finding["page"]),
            finding["message"],
        )
        for finding in report["findings"]
    ]
    if rows:
        lines += [""] + _table(("LEVEL", "WHAT", "NAME", "PASS", "PAGE", "DETAIL"), rows)
    problems = [
        (PASS_TITLES.get(p["pass_name"], "-"), short_page(p["page"]), p["message"])
        for p in report["problems"]
    ]
    if problems:
        lines += ["", "Problems (bounded, the scan went on):"]
        lines += _table(("PASS", "PAGE", "PROBLEM"), problems)
    counts = report["counts"]
    summary = ", ".join(f"{count} {level}" for level, count in counts.items() if count)
    lines += ["", f"Findings: {summary}." if summary else "No findings."]
    return "\n".join(lines)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header) - 1)]

    def line(row):
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)]
        return "  ".join([*cells, str(row[-1])]).rstrip()

    return [line(header)] + [line(row) for row in rows]
