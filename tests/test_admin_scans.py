"""The admin's Scans pages: history, findings, changes since the previous scan, inventory.

Scans are stored from observations (tests/scan_factory.py); starting one from the admin,
which runs the browser, is tested in tests/browser/test_scan_admin.py.
"""

from __future__ import annotations

from html import unescape
from html.parser import HTMLParser

import pytest
from scan_factory import cookie, store_scan, tracker
from sqlalchemy import func, select
from test_admin import NAME, PASSWORD, in_app, post_form, sign_in
from werkzeug.datastructures import MultiDict

from consent.admin.auth import set_admin_password
from consent.admin.roles import grant_role
from consent.db import db
from consent.models import Scan
from consent.sites import get_site_by_key


@pytest.fixture(autouse=True)
def _push_request_context():
    """Each request gets its own app context, as in production (see tests/test_admin.py)."""


@pytest.fixture
def admin(app, client):
    """The test client, signed in as an admin."""
    with app.app_context():
        grant_role(set_admin_password(NAME, PASSWORD), "owner")
        db.session.commit()
    assert sign_in(client).status_code == 302
    return client


@pytest.fixture
def shop(make_site) -> str:
    return make_site("shop", origins=["https://shop.example"])


class _FormValues(HTMLParser):
    """What a browser would submit from the page's main form (not the sign-out button)."""

    def __init__(self):
        super().__init__()
        self.values: list[tuple[str, str]] = []
        self.in_form = self.done = False
        self.textarea: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and "novalidate" in attrs and not self.done:
            self.in_form = True
        if not self.in_form or "name" not in attrs:
            return
        if tag == "input" and (
            attrs.get("type") not in ("checkbox", "radio") or "checked" in attrs
        ):
            self.values.append((attrs["name"], attrs.get("value", "")))
        elif tag == "textarea":
            self.textarea = attrs["name"]
            self.values.append((attrs["name"], ""))

    def handle_data(self, data):
        if self.textarea:
            name, text = self.values[-1]
            self.values[-1] = (name, text + data)

    def handle_endtag(self, tag):
        if tag == "textarea" and self.textarea:
            name, text = self.values[-1]
            # A browser drops the one line break that follows <textarea>.
            self.values[-1] = (name, unescape(text).removeprefix("\r").removeprefix("\n"))
            self.textarea = None
        elif tag == "form" and self.in_form:
            self.in_form, self.done = False, True


def form_of(html: str) -> MultiDict:
    parser = _FormValues()
    parser.feed(html)
    return MultiDict(parser.values)


def test_scans_page_lists_each_scan_with_its_counts(app, admin, shop):
    store_scan(app, shop, cookie("_ga", "before"), cookie("_ga", "reject"))
    page = admin.get("/admin/sites/shop/scans").text
    row = page.split('href="/admin/sites/shop/scans/1">#1</a>')[1].split("</tr>")[0]
    cells = [cell.split("</td>")[0] for cell in row.split("<td>")[1:]]
    # by, status, pages, then violation, undeclared, lifetime, stale
    assert cells[1:] == ["cli", "done", "1", "2", "1", "0", "0"]


def test_scan_page_shows_each_finding_with_its_evidence(app, admin, shop):
    store_scan(app, shop, cookie("_ga", "before"))
    page = admin.get("/admin/sites/shop/scans/1").text
    assert "analytics cookie (Open Cookie Database: Google Analytics) set before any choice" in page


def test_scan_page_shows_what_changed_since_the_previous_scan(app, admin, shop):
    store_scan(app, shop, cookie("_ga", "before"), tracker("ads.example"))
    store_scan(app, shop, cookie("_ga", "before"), cookie("_fbp"))
    changes = admin.get("/admin/sites/shop/scans/2").text.split('id="changes-heading"')[1]
    new, gone = changes.split("<h3>New</h3>")[1].split("<h3>Gone</h3>")
    assert ("<code>_fbp</code>" in new, "<code>ads.example</code>" in gone) == (True, True)
    assert "<code>_ga</code>" not in changes


def test_add_to_inventory_fills_the_suggested_row_into_the_purpose_form(app, admin, shop):
    store_scan(app, shop, cookie("_ga", lifetime_days=730))
    page = admin.get("/admin/sites/shop/scans/1/inventory/analytics?cookie=_ga").text
    values = dict(form_of(page))
    last = max(int(name.split("-")[1]) for name in values if name.startswith("cookies-"))
    row = {
        field: values.get(f"cookies-{last}-{field}")
        for field in ("name", "is_prefix", "provider", "duration")
    }
    # (An unticked "Prefix" box sends nothing, as a browser does.)
    assert row == {
        "name": "_ga",
        "is_prefix": None,
        "provider": "Google Analytics",
        "duration": "2 years",
    }
    assert values[f"cookies-{last}-description"].startswith("ID used to identify users")


def test_add_to_inventory_changes_nothing_until_the_admin_saves(app, admin, shop):
    store_scan(app, shop, cookie("_ga"))
    admin.get("/admin/sites/shop/scans/1/inventory/analytics?cookie=_ga")
    purpose = in_app(app, lambda: get_site_by_key(shop).purposes[2].cookies)
    assert purpose == []


def test_saving_the_filled_form_declares_the_cookie(app, admin, shop):
    store_scan(app, shop, cookie("_ga"))
    page = admin.get("/admin/sites/shop/scans/1/inventory/analytics?cookie=_ga").text
    action = page.split('novalidate action="')[1].split('"')[0]
    response = admin.post(action, data=form_of(page))
    assert response.status_code == 302, response.text
    names = in_app(app, lambda: [c["name"] for c in get_site_by_key(shop).purposes[2].cookies])
    assert names == ["_ga"]


def test_a_declared_cookie_is_not_suggested_again(app, admin, shop):
    store_scan(app, shop, cookie("_ga"))
    page = admin.get("/admin/sites/shop/scans/1/inventory/analytics?cookie=_ga").text
    admin.post(page.split('novalidate action="')[1].split('"')[0], data=form_of(page))
    again = admin.get("/admin/sites/shop/scans/1/inventory/analytics?cookie=_ga").text
    assert "Scan #1 suggests no new cookie rows for &#39;analytics&#39;." in again


@pytest.mark.parametrize(
    ("urls", "message"),
    [
        ("https://elsewhere.example/", "is not on an allowed origin of &#39;shop&#39;"),
        ("ftp://shop.example/", "is not an http(s) URL."),
    ],
)
def test_starting_a_scan_off_the_site_is_refused_beside_the_field(app, admin, shop, urls, message):
    response = post_form(admin, "/admin/sites/shop/scans", {"urls": urls, "pages": "3"})
    assert response.status_code == 422
    field = response.text.split('id="urls-error"')[1].split("</p>")[0]
    assert message in field
    assert in_app(app, lambda: db.session.scalar(select(func.count()).select_from(Scan))) == 0


def test_a_scan_of_another_site_is_not_found(app, admin, shop, make_site):
    store_scan(app, shop, cookie("_ga"))
    make_site("other")
    assert admin.get("/admin/sites/other/scans/1").status_code == 404
