"""One page, several legal regimes: the banner follows the site's rule for the visitor's
region, which the proxy names in CF-IPCountry (and CF-Region-Code for the subdivision).

The site: opt-in in the EEA, the UK and Switzerland; a notice in California; opt-out in
the other US states with a privacy law. Analytics and marketing may run until the person
opts out there; preferences may not.
"""

from __future__ import annotations

import uuid

import pytest
from playwright.sync_api import Page, expect

from consent import regions
from consent.db import db
from consent.sites import STANDARD_PURPOSES, create_site, publish_policy, set_purpose

pytestmark = pytest.mark.browser

RULES = ["EEA,UK,CH=opt-in", "US-CA=notice", "US-PRIVACY-STATES=opt-out"]
FRANCE = {"CF-IPCountry": "FR"}
CALIFORNIA = {"CF-IPCountry": "US", "CF-Region-Code": "CA"}
TEXAS = {"CF-IPCountry": "US", "CF-Region-Code": "TX"}
GPC = {"Sec-GPC": "1"}
PAGE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<script src="{origin}/widget/consent.js{query}" data-site="{site}" defer></script></head>'
    "<body><h1>Shop</h1>"
    '<script type="text/plain" data-consent="analytics">document.body.dataset.analytics = "ran"'
    "</script>"
    '<script type="text/plain" data-consent="marketing">document.body.dataset.marketing = "ran"'
    "</script></body></html>"
)


@pytest.fixture
def shop(live_app):
    """A site with the region rules above; its key."""
    key = f"regions-{uuid.uuid4().hex[:8]}"
    with live_app.app_context():
        site = create_site(key, "Shop in many places", languages=["en"])
        for position, purpose in enumerate(STANDARD_PURPOSES):
            fields = {name: value for name, value in purpose.items() if name != "key"}
            set_purpose(site, purpose["key"], position=position, **fields)
        regions.set_region_rules(site, RULES)
        regions.set_purpose_defaults(site, opt_out=["analytics", "marketing"])
        publish_policy(site, "v1", url="https://shop.example/privacy", is_material=True)
        db.session.commit()
    return key


def visit(
    new_context, live_server, site: str, headers: dict, *, gpc: bool = False, bundle=False
) -> Page:
    """Open the shop page from a browser whose requests carry these headers (``bundle``:
    the script with the configuration inside, ``?site=``)."""
    context = new_context(extra_http_headers={**headers, **(GPC if gpc else {})})
    if gpc:
        context.add_init_script(
            "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true})"
        )
    page = context.new_page()
    url = f"{live_server}/shop-{site}"
    html = PAGE.format(origin=live_server, site=site, query=f"?site={site}" if bundle else "")
    page.route(url, lambda route: route.fulfill(body=html, content_type="text/html"))
    page.goto(url)
    page.wait_for_function("() => window.Consent && window.Consent.version")
    page.evaluate("Consent.ready")
    return page


def first_layer(page: Page):
    return page.locator("consent-widget").get_by_role("dialog", name="Your privacy choices")


def privacy_choices(page: Page):
    return page.locator("consent-settings").get_by_role("button", name="Your Privacy Choices")


def ran(page: Page) -> dict[str, str]:
    return page.evaluate("({...document.body.dataset})")


def history(page: Page, site: str, headers: dict) -> list[dict]:
    page.wait_for_function("() => Consent.state().pending === 0 && Consent.state().visitor_id")
    token = page.evaluate("Consent._.readStore().token")
    response = page.request.get(
        f"/v1/sites/{site}/me", headers={**headers, "X-Consent-Token": token}
    )
    assert response.status == 200, response.text()
    return response.json()["history"]


@pytest.mark.parametrize(
    "headers",
    [FRANCE, {}, {"CF-IPCountry": "XX"}, {"CF-IPCountry": "T1"}, {"CF-IPCountry": "US"}],
    ids=["france", "no-header", "unknown-XX", "tor-T1", "us-state-unknown"],
)
def test_where_opt_in_applies_the_page_asks_first_and_runs_nothing(
    new_context, live_server, shop, headers
):
    page = visit(new_context, live_server, shop, headers)
    expect(first_layer(page).get_by_role("button", name="Reject all")).to_be_visible()
    expect(first_layer(page).get_by_role("button", name="Accept all")).to_be_visible()
    assert ran(page) == {}
    assert page.evaluate("Consent.allowed('analytics')") is False


def test_in_california_the_same_page_shows_the_notice_and_runs_the_marked_purposes(
    new_context, live_server, shop
):
    page = visit(new_context, live_server, shop, CALIFORNIA)
    notice = first_layer(page)
    expect(notice.get_by_text("You can opt out at any time")).to_be_visible()
    expect(notice.get_by_role("button", name="Do Not Sell or Share")).to_be_visible()
    expect(notice.get_by_role("button", name="Accept all")).to_have_count(0)
    page.wait_for_function("() => document.body.dataset.marketing === 'ran'")
    assert ran(page) == {"analytics": "ran", "marketing": "ran"}
    assert page.evaluate("Consent.allowed('preferences')") is False


def test_closing_the_notice_records_nothing_and_it_stays_closed(new_context, live_server, shop):
    page = visit(new_context, live_server, shop, CALIFORNIA)
    first_layer(page).get_by_role("button", name="OK").click()
    expect(first_layer(page)).to_have_count(0)
    expect(privacy_choices(page)).to_be_visible()
    assert page.evaluate("Consent.state()")["decided"] is False
    assert page.evaluate("Consent.state().pending") == 0
    page.reload()
    page.evaluate("Consent.ready")
    expect(privacy_choices(page)).to_be_visible()
    expect(first_layer(page)).to_have_count(0)


def test_do_not_sell_or_share_turns_marketing_off_and_is_recorded(new_context, live_server, shop):
    page = visit(new_context, live_server, shop, CALIFORNIA)
    first_layer(page).get_by_role("button", name="Do Not Sell or Share").click()
    [record] = history(page, shop, CALIFORNIA)
    assert record["decisions"] == [{"purpose": "marketing", "granted": False}]
    assert (record["region"], record["mode"]) == ("US-CA", "notice")
    assert page.evaluate("[Consent.allowed('marketing'), Consent.allowed('analytics')]") == [
        False,
        True,
    ]


def test_gpc_in_california_opts_out_and_the_record_says_gpc(new_context, live_server, shop):
    page = visit(new_context, live_server, shop, CALIFORNIA, gpc=True)
    [record] = history(page, shop, CALIFORNIA)
    assert (record["source"], record["gpc"]) == ("gpc", True)
    assert record["decisions"] == [{"purpose": "marketing", "granted": False}]
    page.wait_for_function("() => document.body.dataset.analytics === 'ran'")
    assert ran(page) == {"analytics": "ran"}
    check = page.request.get(
        f"/v1/sites/{shop}/check?purpose=marketing",
        headers={**CALIFORNIA, "X-Consent-Token": page.evaluate("Consent._.readStore().token")},
    )
    assert (check.json()["allowed"], check.json()["reason"]) == (False, "denied")


def test_in_texas_no_banner_and_your_privacy_choices_opts_out(new_context, live_server, shop):
    page = visit(new_context, live_server, shop, TEXAS)
    expect(privacy_choices(page)).to_be_visible()
    expect(first_layer(page)).to_have_count(0)
    page.wait_for_function("() => document.body.dataset.analytics === 'ran'")
    privacy_choices(page).click()
    centre = page.locator("consent-widget").get_by_role("dialog", name="Your Privacy Choices")
    analytics = centre.get_by_role("switch", name="Analytics")
    expect(analytics).to_have_attribute("aria-checked", "true")
    analytics.click()
    centre.get_by_role("button", name="Save choices").click()
    [record] = history(page, shop, TEXAS)
    assert record["source"] == "preferences"
    assert {d["purpose"]: d["granted"] for d in record["decisions"]} == {
        "necessary": True,
        "preferences": False,
        "analytics": False,
        "marketing": True,
    }
    assert page.evaluate("Consent.allowed('analytics')") is False


def test_consent_mode_defaults_denied_first_then_per_region(new_context, live_server, shop):
    # The bundle brings the configuration with the script: the defaults come before any tag.
    page = visit(new_context, live_server, shop, TEXAS, bundle=True)
    defaults = page.evaluate(
        "window.dataLayer.map(x => Array.from(x)).filter(x => x[1] === 'default').map(x => x[2])"
    )
    assert "region" not in defaults[0]
    assert set(defaults[0].values()) - {500} == {"denied"}
    [california] = [entry for entry in defaults[1:] if entry["region"] == ["US-CA"]]
    [states] = [entry for entry in defaults[1:] if "US-TX" in entry["region"]]
    assert (california["analytics_storage"], california["functionality_storage"]) == (
        "granted",
        "denied",
    )
    assert states["ad_storage"] == "granted"
    assert "FR" not in {code for entry in defaults[1:] for code in entry["region"]}
