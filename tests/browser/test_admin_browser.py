"""The admin console in a real browser: sign in, publish a policy, read the chart.

Runs against the widget suite's live server (tests/browser/conftest.py) on a site of
its own, so the demo site the widget tests use is left alone.
"""

from __future__ import annotations

import random
import re
from datetime import timedelta

import pytest

from consent import chain, ledger, visitors
from consent.admin.auth import set_admin_password
from consent.admin.roles import grant_role
from consent.db import db, now_utc
from consent.models import BannerImpression
from consent.sites import STANDARD_PURPOSES, create_site, publish_policy, set_purpose

pytestmark = pytest.mark.browser

SITE = "bistro"
NAME, PASSWORD = "grace", "a long browser passphrase"
DAYS = 14


@pytest.fixture(scope="module")
def bistro(live_app, live_server, monkeypatch_module):
    """A site with two weeks of banner counts and decisions, and an admin account.

    The history is back-dated through the ledger's clock: no public surface can
    record in the past.
    """
    chance = random.Random(5)
    today = now_utc()
    with live_app.app_context():
        site = create_site(SITE, "Bistro", origins=[live_server], lifetime_days=395)
        for position, purpose in enumerate(STANDARD_PURPOSES):
            set_purpose(
                site,
                purpose["key"],
                position=position,
                **{k: v for k, v in purpose.items() if k != "key"},
            )
        publish_policy(site, "v1", is_material=True, published_at=today - timedelta(DAYS + 1))
        grant_role(set_admin_password(NAME, PASSWORD), "owner")
        for days_ago in range(DAYS, -1, -1):
            day = today - timedelta(days=days_ago)
            db.session.add(BannerImpression(site_id=site.id, day=day.date(), count=40))
            monkeypatch_module.setattr(chain, "now_utc", lambda day=day: day)
            for _ in range(chance.randint(18, 30)):
                visitor = visitors.create_visitor(site)
                ledger.record_decision(
                    site,
                    visitor.subject,
                    [
                        {"purpose": "preferences", "granted": chance.random() < 0.7},
                        {"purpose": "analytics", "granted": chance.random() < 0.5 + days_ago / 40},
                        {"purpose": "marketing", "granted": chance.random() < 0.3},
                    ],
                    source="banner",
                )
        monkeypatch_module.undo()
        db.session.commit()
    return SITE


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def sign_in(page):
    page.goto("/admin/")
    assert "/admin/sign-in" in page.url
    page.get_by_label("Name").fill(NAME)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/admin/")


def test_admin_publishes_a_policy_and_reads_the_chart(page, bistro, artifacts):
    sign_in(page)
    page.get_by_role("link", name="Bistro").click()
    page.get_by_role("link", name="Policies").click()
    page.get_by_role("textbox", name="Version").fill("v2")
    page.get_by_label("Policy URL").fill("https://bistro.example/privacy")
    page.get_by_label("Material change").check()
    page.get_by_role("button", name="Publish").click()
    status = page.get_by_role("status")
    assert "material change" in status.inner_text()
    assert "current decisions are now stale" in status.inner_text()

    page.get_by_role("link", name="Overview").click()
    chart = page.locator("figure.chart svg.chart-svg")
    chart.wait_for()
    assert chart.locator("g.series").count() == 3
    assert chart.locator("polyline").count() >= 3
    assert chart.locator("circle").count() == 3 * (rates_days := 30) - 3 * (rates_days - DAYS - 1)
    box = chart.bounding_box()
    assert box["width"] > 300 and box["height"] > 100
    page.screenshot(path=str(artifacts / "admin-dashboard.png"), full_page=True)

    # The legend's buttons (the only JavaScript) hide and show a purpose's line.
    toggle = page.get_by_role("button", name="marketing")
    toggle.click()
    assert toggle.get_attribute("aria-pressed") == "false"
    assert not chart.locator('g[data-series="marketing"]').is_visible()
    toggle.click()
    assert chart.locator('g[data-series="marketing"]').is_visible()


def test_admin_pages_fit_a_320_pixel_screen(new_context, bistro):
    page = new_context(viewport={"width": 320, "height": 640}).new_page()
    sign_in(page)
    for path in (
        "/admin/",
        f"/admin/sites/{SITE}",
        f"/admin/sites/{SITE}/rates",
        f"/admin/sites/{SITE}/records",
        f"/admin/sites/{SITE}/purposes",
    ):
        page.goto(path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 320, f"{path} is {width}px wide"


def test_chart_and_table_work_without_javascript(new_context, bistro):
    page = new_context(java_script_enabled=False).new_page()
    sign_in(page)
    page.goto(f"/admin/sites/{SITE}/rates?period=week")
    assert page.locator("svg.chart-svg circle").count() > 0
    assert page.locator("table.numbers tbody tr").count() >= 3
    assert page.get_by_role("button", name="marketing").count() == 0


def test_a_visitors_record_links_to_the_banner_they_were_shown(page, bistro):
    # A visitor accepts on the demo page: the widget sends the hash of what it showed.
    page.goto("/")
    page.wait_for_function("() => window.Consent && window.Consent.version")
    page.get_by_role("dialog", name="Your privacy choices").get_by_role(
        "button", name="Accept all"
    ).click()
    page.wait_for_function(
        "() => Consent.state().pending === 0 && Consent.state().visitor_id !== null"
    )
    sign_in(page)
    page.goto("/admin/sites/demo/records")
    page.get_by_role("link", name=re.compile(r"^[0-9a-f]{12}")).first.click()
    assert page.get_by_role("heading", name="Your privacy choices").is_visible()
    assert page.get_by_role("heading", name="Marketing").is_visible()


def test_evidence_pages_fit_a_320_pixel_screen(new_context, bistro):
    page = new_context(viewport={"width": 320, "height": 640}).new_page()
    sign_in(page)
    for path in (f"/admin/sites/{SITE}/rights-requests", "/admin/access-log"):
        page.goto(path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 320, f"{path} is {width}px wide"
