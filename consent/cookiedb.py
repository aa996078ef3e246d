"""Name and classify cookies and storage keys from the Open Cookie Database.

The CSV ships in ``consent/data/`` with its Apache-2.0 licence (see NOTICE). It is read
once per process. A row whose ``Wildcard match`` is 1 names a prefix (``_ga_`` matches
``_ga_ABC123``); an exact name wins over a prefix, and a longer prefix over a shorter one.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from pathlib import Path

DATABASE = Path(__file__).parent / "data" / "open-cookie-database.csv"

#: The database's categories, as this service's purpose keys.
PURPOSE_OF_CATEGORY = {
    "Necessary": "necessary",
    "Security": "necessary",
    "Functional": "preferences",
    "Personalization": "preferences",
    "Analytics": "analytics",
    "Marketing": "marketing",
}


@dataclass(frozen=True)
class KnownCookie:
    """What the database says of one cookie or storage key."""

    name: str
    is_prefix: bool
    platform: str
    category: str
    purpose: str
    domain: str
    description: str
    retention: str
    controller: str
    privacy_url: str


@cache
def _index() -> tuple[dict[str, KnownCookie], list[KnownCookie]]:
    exact: dict[str, KnownCookie] = {}
    prefixes: list[KnownCookie] = []
    with DATABASE.open(newline="", encoding="utf-8") as file:
        for row in csv.DictReader(file):
            name = row["Cookie / Data Key name"].strip()
            category = row["Category"].strip()
            if not name or category not in PURPOSE_OF_CATEGORY:
                continue
            cookie = KnownCookie(
                name=name,
                is_prefix=row["Wildcard match"].strip() == "1",
                platform=row["Platform"].strip(),
                category=category,
                purpose=PURPOSE_OF_CATEGORY[category],
                domain=row["Domain"].strip(),
                description=row["Description"].strip(),
                retention=row["Retention period"].strip(),
                controller=row["Data Controller"].strip(),
                privacy_url=row["User Privacy & GDPR Rights Portals"].strip(),
            )
            if cookie.is_prefix:
                prefixes.append(cookie)
            else:
                exact.setdefault(name, cookie)
    prefixes.sort(key=lambda cookie: len(cookie.name), reverse=True)
    return exact, prefixes


def look_up_cookie(name: str) -> KnownCookie | None:
    """Return what the database knows of a cookie or storage key name, or None."""
    exact, prefixes = _index()
    if name in exact:
        return exact[name]
    return next((cookie for cookie in prefixes if name.startswith(cookie.name)), None)
