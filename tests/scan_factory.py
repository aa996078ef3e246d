"""Stored scans for the admin's tests, made from what a browser could have seen.

The scans the browser really runs are tested in tests/browser/test_scan.py; the admin's
pages only read stored rows, so these are made by the same functions from observations
written out here.
"""

from __future__ import annotations

from consent.db import db, now_utc
from consent.scan import store
from consent.scan.observations import CookieSeen, Observations, RequestSeen
from consent.sites import get_site_by_key

PAGE = "https://shop.example/"


def cookie(name: str, pass_name: str = "accept", lifetime_days: float | None = 365) -> CookieSeen:
    """A first-party cookie the shop's home page set in a pass."""
    return CookieSeen(
        pass_name=pass_name,
        page=PAGE,
        name=name,
        domain="shop.example",
        path="/",
        lifetime_seconds=None if lifetime_days is None else lifetime_days * 86400,
        secure=True,
        http_only=False,
        same_site="Lax",
        is_third_party=False,
    )


def tracker(host: str, pass_name: str = "before") -> RequestSeen:
    """A request of a pass to a third-party host."""
    return RequestSeen(pass_name, PAGE, host, "script", f"https://{host}/tag.js")


def store_scan(app, site_key: str, *seen_items) -> int:
    """Store a finished scan of the shop's home page that saw these; return its id."""
    seen = Observations(
        pages=[PAGE],
        cookies=[item for item in seen_items if isinstance(item, CookieSeen)],
        requests=[item for item in seen_items if isinstance(item, RequestSeen)],
    )
    with app.app_context():
        site = get_site_by_key(site_key)
        plan = store.plan_scan(site, [PAGE], allow_hosts=["shop.example"])
        scan = store.start_scan(plan, site, "cli")
        _, report = store.assess(site, plan, seen, now_utc())
        store.finish_scan(scan, report)
        db.session.commit()
        return scan.id
