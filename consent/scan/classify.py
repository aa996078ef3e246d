"""Name what a scan saw: the site's declared inventory first, then the Open Cookie Database."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from consent.cookiedb import look_up_cookie

#: A declared duration that means "until the browser closes".
SESSION = timedelta(0)
_DURATION_PART = re.compile(
    r"(\d+(?:\.\d+)?)\s*(second|sec|minute|min|hour|day|week|month|year)s?\b", re.IGNORECASE
)
_UNIT_SECONDS = {
    "second": 1,
    "sec": 1,
    "minute": 60,
    "min": 60,
    "hour": 3600,
    "day": 86400,
    "week": 7 * 86400,
    "month": 365.25 / 12 * 86400,
    "year": 365.25 * 86400,
}


@dataclass(frozen=True)
class Declared:
    """One cookie row of the site's inventory, with the purpose that covers it."""

    name: str
    is_prefix: bool
    purpose: str
    is_required: bool
    provider: str
    duration: str
    description: str
    #: The service (vendor) inside the purpose that declares it, if any.
    service: str | None = None

    def matches(self, name: str) -> bool:
        return name.startswith(self.name) if self.is_prefix else name == self.name

    @property
    def label(self) -> str:
        return self.name + ("*" if self.is_prefix else "")


@dataclass(frozen=True)
class Classification:
    """What a name is: its purpose and where that came from (inventory, database, unknown)."""

    purpose: str
    source: str
    provider: str = ""
    description: str = ""
    retention: str = ""
    declared: Declared | None = None

    @property
    def is_necessary(self) -> bool:
        return self.purpose == "necessary" or bool(self.declared and self.declared.is_required)


def declared_inventory(purposes: list[Any]) -> list[Declared]:
    """List the cookie rows a site declares, in its purposes and their services."""
    inventory = []
    for purpose in purposes:
        if purpose.kind != "cookie":
            continue
        rows = [(None, row) for row in purpose.cookies or []]
        for service in purpose.services or []:
            rows += [(service.get("key"), row) for row in service.get("cookies") or []]
        for service_key, row in rows:
            inventory.append(
                Declared(
                    name=row["name"],
                    is_prefix=bool(row.get("is_prefix")),
                    purpose=purpose.key,
                    is_required=purpose.is_required,
                    provider=row.get("provider") or "",
                    duration=row.get("duration") or "",
                    description=row.get("description") or "",
                    service=service_key,
                )
            )
    return inventory


def find_declared(inventory: list[Declared], name: str) -> Declared | None:
    """Return the inventory row that covers a name: an exact name, else the longest prefix."""
    exact = [row for row in inventory if not row.is_prefix and row.name == name]
    if exact:
        return exact[0]
    prefixes = sorted(
        (row for row in inventory if row.is_prefix and name.startswith(row.name)),
        key=lambda row: len(row.name),
        reverse=True,
    )
    return prefixes[0] if prefixes else None


def classify(inventory: list[Declared], name: str) -> Classification:
    """Classify a cookie or storage key: declared inventory, then the database, else unknown."""
    declared = find_declared(inventory, name)
    if declared is not None:
        return Classification(
            purpose="necessary" if declared.is_required else declared.purpose,
            source="inventory",
            provider=declared.provider,
            description=declared.description,
            retention=declared.duration,
            declared=declared,
        )
    known = look_up_cookie(name)
    if known is not None:
        return Classification(
            purpose=known.purpose,
            source="database",
            provider=known.platform or known.controller,
            description=known.description,
            retention=known.retention,
        )
    return Classification(purpose="unknown", source="unknown")


def parse_duration(text: str) -> timedelta | None:
    """Read a declared duration ("13 months", "1 year", "session"); None if it says none."""
    text = (text or "").strip().lower()
    if text in {"session", "browser session", "end of session"}:
        return SESSION
    parts = _DURATION_PART.findall(text)
    if not parts:
        return None
    return timedelta(seconds=sum(float(n) * _UNIT_SECONDS[unit.lower()] for n, unit in parts))


def describe_lifetime(seconds: float | None) -> str:
    """Say how long a cookie lives, the way inventories write it ("13 months", "90 days")."""
    if seconds is None:
        return "session"
    for unit, smallest in (("year", 1), ("month", 2), ("day", 1), ("hour", 1), ("minute", 0)):
        count = seconds / _UNIT_SECONDS[unit]
        is_whole = abs(count - round(count)) < 0.05
        if count >= smallest - 0.05 and (is_whole or unit in ("day", "hour", "minute")):
            whole = max(round(count), 1)
            return f"{whole} {unit}{'s' if whole != 1 else ''}"
    return "1 minute"
