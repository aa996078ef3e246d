"""A scan started from the admin console runs in the background, and its page follows it.

The scan is the real one: a separate ``consent scan`` process driving Chromium over the
live server's demo pages, writing its progress and findings to the live app's database.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from consent.admin.auth import set_admin_password
from consent.admin.roles import grant_role
from consent.db import db

pytestmark = pytest.mark.browser

NAME, PASSWORD = "linus", "a scanning passphrase"


@pytest.fixture(scope="module")
def scanner_admin(live_app, live_server):
    with live_app.app_context():
        grant_role(set_admin_password(NAME, PASSWORD), "owner")
        db.session.commit()


def test_admin_starts_a_scan_and_sees_it_finish(page, scanner_admin, live_server):
    page.goto("/admin/")
    page.get_by_label("Name").fill(NAME)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.goto("/admin/sites/demo/scans")
    page.get_by_label("Start from these pages").fill(f"{live_server}/")
    page.get_by_label("Most pages").fill("2")
    page.get_by_role("button", name="Start a scan").click()

    status = page.locator("#scan-status")
    expect(status).to_have_text(re.compile(r"^running: \d+ of 6 page visits$"))
    expect(status).to_have_text("done", timeout=120_000)  # the page reloads itself
    expect(page.get_by_text("No findings: the pages set only what")).to_be_visible()
    page.get_by_role("link", name="All scans").click()
    row = page.get_by_role("row").filter(has_text="admin:linus")
    expect(row).to_contain_text("done")
