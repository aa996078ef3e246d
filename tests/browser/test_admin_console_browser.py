"""The admin console in a real browser: every form shown from stored values, submitted
unchanged, saved with nothing changed; every error of a submission shown at once beside
its field; the purpose editor's rows working without JavaScript; sessions ended from the
account page; Verify now, wide tables and narrow tabs.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from consent import regions
from consent.admin.auth import set_admin_password
from consent.admin.roles import grant_role
from consent.db import db
from consent.demo import DEMO_PURPOSES
from consent.keys import issue_key
from consent.models import ApiKey
from consent.sites import banner_config, create_site, get_site_by_key, set_purpose

pytestmark = pytest.mark.browser

SITE = "cafe"
#: Texts the site replaces, so its settings form shows text rows to submit unchanged.
CAFE_TEXTS = {
    "fr": {"title": "Vos choix, au café", "reject_all": "Tout refuser"},
    "en": {"title": "Your choices at the café"},
}
NAME, PASSWORD = "hopper", "a long form-filling passphrase"
CAFE_REGION_RULES = ["EEA,UK,CH=opt-in", "US-PRIVACY-STATES=opt-out"]


@pytest.fixture(scope="module")
def cafe(live_app, live_server):
    """A site with every setting filled and the demo's purposes (cookies and services)."""
    with live_app.app_context():
        site = create_site(
            SITE,
            "Café",
            origins=[live_server, "https://cafe.example"],
            languages=["en", "fr"],
            texts=CAFE_TEXTS,
            lifetime_days=200,
            retention_days=800,
        )
        site.controller_name = "Café Ltd"
        site.controller_contact = "privacy@cafe.example"
        site.logo_url = "https://cafe.example/logo.svg"
        for position, purpose in enumerate(DEMO_PURPOSES):
            # In the site's two languages only, as a site owner would have them.
            texts = {lang: t for lang, t in purpose["translations"].items() if lang in ("en", "fr")}
            set_purpose(site, position=position, **{**purpose, "translations": texts})
        regions.set_region_rules(site, CAFE_REGION_RULES)
        regions.set_purpose_defaults(site, opt_out=["analytics"])
        grant_role(set_admin_password(NAME, PASSWORD), "owner")
        db.session.commit()
    return SITE


def stored(live_app, key: str = SITE) -> dict:
    """What the site holds, settings and purposes, as the database has it."""
    with live_app.app_context():
        site = get_site_by_key(key)
        return {
            "config": banner_config(site),
            "settings": {
                name: getattr(site, name)
                for name in (
                    "name",
                    "allowed_origins",
                    "languages",
                    "default_language",
                    "lifetime_days",
                    "retention_days",
                    "texts",
                    "controller_name",
                    "controller_contact",
                    "logo_url",
                    "region_rules",
                )
            },
        }


@pytest.fixture(scope="module")
def signed_in(browser, live_server, cafe):
    """The cookies of one sign-in, shared by the tests (sign-in is rate-limited per address)."""
    context = browser.new_context(base_url=live_server)
    page = context.new_page()
    page.goto("/admin/sign-in")
    page.get_by_label("Name").fill(NAME)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server}/admin/")
    state = context.storage_state()
    context.close()
    return state


@pytest.fixture
def open_page(new_context, signed_in):
    """Open an admin page in a signed-in browser (``javascript=False`` for one without)."""

    def open_at(path: str, *, javascript: bool = True):
        page = new_context(storage_state=signed_in, java_script_enabled=javascript).new_page()
        errors = []
        page.on("pageerror", lambda error: errors.append(error))
        page.goto(path)
        assert "/sign-in" not in page.url
        opened.append(errors)
        return page

    opened: list[list] = []
    yield open_at
    assert not any(opened), f"errors reached the page: {opened}"


def test_settings_submitted_unchanged_change_nothing(open_page, live_app):
    before = stored(live_app)
    page = open_page(f"/admin/sites/{SITE}/edit")
    assert (
        page.get_by_label("Allowed origins").input_value().splitlines()
        == (before["settings"]["allowed_origins"])
    )
    assert page.get_by_label("Languages").input_value() == "en fr"
    assert page.get_by_label("Logo URL").input_value() == before["settings"]["logo_url"]
    page.get_by_role("button", name="Save settings").click()
    page.wait_for_url(re.compile(rf"/admin/sites/{SITE}$"))
    assert "What the banner shows is unchanged." in page.get_by_role("status").inner_text()
    assert stored(live_app) == before


@pytest.mark.parametrize("purpose", [p["key"] for p in DEMO_PURPOSES])
def test_a_purpose_submitted_unchanged_changes_nothing(open_page, live_app, purpose):
    before = stored(live_app)
    page = open_page(f"/admin/sites/{SITE}/purposes/{purpose}")
    page.get_by_role("button", name="Save purpose").last.click()
    page.wait_for_url(re.compile(rf"/admin/sites/{SITE}/purposes$"))
    assert "What the banner shows is unchanged." in page.get_by_role("status").inner_text()
    assert stored(live_app) == before


def test_a_new_site_needs_only_a_key_and_a_name(open_page, live_app):
    page = open_page("/admin/sites/new")
    page.get_by_label("Site key").fill("bakery")
    page.get_by_label("Name", exact=True).fill("Bakery")
    page.get_by_role("button", name="Create site").click()
    page.wait_for_url(re.compile(r"/admin/sites/bakery$"))
    assert stored(live_app, "bakery")["settings"]["languages"] == ["en"]


def test_a_policy_needs_only_a_version(open_page, live_app):
    page = open_page(f"/admin/sites/{SITE}/policies")
    page.get_by_role("textbox", name="Version").fill("2026-12")
    page.get_by_role("button", name="Publish").click()
    assert "Published policy version '2026-12'." in page.get_by_role("status").inner_text()


def test_a_key_needs_a_name_and_a_scope(open_page, live_app):
    page = open_page(f"/admin/sites/{SITE}/keys")
    page.get_by_label("Name").fill("newsletter")
    page.get_by_label("read", exact=True).check()
    page.get_by_role("button", name="Issue key").click()
    assert page.get_by_label("New API key").input_value().startswith("ck_")
    with live_app.app_context():
        assert db.session.scalars(db.select(ApiKey.name)).all().count("newsletter") == 1


def test_every_wrong_field_is_named_at_once_beside_it(open_page, live_app):
    before = stored(live_app)
    page = open_page(f"/admin/sites/{SITE}/edit")
    page.get_by_label("Name", exact=True).fill("")
    page.get_by_label("Allowed origins").fill("cafe.example\nhttps://ok.example/path")
    page.get_by_label("Languages").fill("english fr")
    page.get_by_label("Consent lifetime (days)").fill("999")
    page.get_by_label("Record retention (days)").fill("0")
    page.get_by_role("group", name="Text 1", exact=True).get_by_label("Language").fill("english")
    page.get_by_role("button", name="Save settings").click()
    expected = {
        "name": "Give the site a name.",
        "origins": "'cafe.example' is not an origin",
        "languages": "'english' is not a language code",
        "lifetime_days": "Number must be between 1 and 395.",
        "retention_days": "Number must be between",
        "texts-0-language": "Use a language code like en",
    }
    for name, message in expected.items():
        field = page.locator(f"#{name}")
        assert field.get_attribute("aria-invalid") == "true", name
        error = page.locator(f"#{name}-error")
        assert message in error.inner_text(), name
        assert f"{name}-error" in field.get_attribute("aria-describedby")
    # What was typed stays as typed, not turned into Python lists.
    assert page.get_by_label("Languages").input_value() == "english fr"
    assert page.get_by_label("Allowed origins").input_value() == (
        "cafe.example\nhttps://ok.example/path"
    )
    assert stored(live_app) == before


def test_region_rules_show_one_per_line_as_stored(open_page):
    page = open_page(f"/admin/sites/{SITE}/edit")
    assert page.get_by_label("Region rules").input_value().splitlines() == CAFE_REGION_RULES


def test_an_opt_out_rule_for_the_eea_is_refused_beside_the_field(open_page, live_app):
    before = stored(live_app)
    page = open_page(f"/admin/sites/{SITE}/edit")
    page.get_by_label("Region rules").fill("EEA=opt-out\nUS-CA=notice")
    page.get_by_role("button", name="Save settings").click()
    assert page.locator("#region_rules").get_attribute("aria-invalid") == "true"
    error = page.locator("#region_rules-error").inner_text()
    assert "Opt-in cannot be replaced in the EEA, the UK or Switzerland" in error
    assert page.get_by_label("Region rules").input_value() == "EEA=opt-out\nUS-CA=notice"
    assert stored(live_app) == before


def test_a_preset_button_adds_its_rule_and_saves_nothing(open_page, live_app):
    before = stored(live_app)
    page = open_page(f"/admin/sites/{SITE}/edit", javascript=False)
    page.get_by_label("Region rules").fill("US-CA=notice")
    page.get_by_role("button", name="Add rule: EEA, UK, CH opt-in").click()
    assert page.get_by_label("Region rules").input_value().splitlines() == [
        "US-CA=notice",
        "EEA,UK,CH=opt-in",
    ]
    assert stored(live_app) == before


def test_look_up_fills_a_cookie_row_without_javascript(open_page, live_app):
    page = open_page(f"/admin/sites/{SITE}/purposes/new", javascript=False)
    page.get_by_role("button", name="Add a cookie").click()
    row = page.get_by_role("group", name="Cookie 1")
    row.get_by_label("Name or prefix").fill("_ga")
    row.get_by_role("button", name="Look up").click()
    row = page.get_by_role("group", name="Cookie 1")
    assert row.get_by_label("Provider").input_value() == "Google"
    assert row.get_by_label("Duration").input_value() == "2 years"
    assert "category Analytics" in page.get_by_role("status").inner_text()


def test_rows_are_added_and_removed_without_javascript(open_page, live_app):
    before = stored(live_app)
    page = open_page(f"/admin/sites/{SITE}/purposes/analytics", javascript=False)
    expect(page.get_by_role("group", name="Service 1")).to_have_count(1)
    page.get_by_role("button", name="Add a service").click()
    expect(page.get_by_role("group", name="Service 2")).to_have_count(1)
    page.get_by_role("button", name="Remove service 2").click()
    expect(page.get_by_role("group", name="Service 2")).to_have_count(0)
    page.get_by_role("button", name="Remove language 2", exact=True).click()
    expect(page.get_by_role("group", name="Language 2")).to_have_count(0)
    assert stored(live_app) == before  # nothing is saved until Save
    page.get_by_role("button", name="Save purpose").last.click()
    page.wait_for_url(re.compile(rf"/admin/sites/{SITE}/purposes$"))
    after = stored(live_app)["config"]["purposes"]
    analytics = next(purpose for purpose in after if purpose["key"] == "analytics")
    assert set(analytics["translations"]) == {"en"}


def test_sign_out_everywhere_ends_the_other_browser(new_context, live_app, live_server, cafe):
    # An admin of its own: the shared signed-in session of the other tests stays open.
    with live_app.app_context():
        grant_role(set_admin_password("lovelace", PASSWORD), "analyst")
        db.session.commit()
    first, second = (new_context().new_page() for _ in range(2))
    for page in (first, second):
        page.goto("/admin/sign-in")
        page.get_by_label("Name").fill("lovelace")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{live_server}/admin/")
    first.get_by_role("link", name="lovelace").click()
    sessions = first.get_by_role("region", name="Sessions")
    expect(sessions.get_by_text("this browser")).to_have_count(1)
    expect(sessions.get_by_role("button", name="Sign out this session")).to_have_count(1)
    first.get_by_role("button", name="Sign out everywhere").click()
    assert "Signed out everywhere" in first.get_by_role("status").inner_text()
    second.reload()
    expect(second).to_have_url(re.compile(r"/admin/sign-in"))


def test_verify_now_from_the_dashboard(open_page):
    page = open_page("/admin/")
    page.get_by_role("button", name="Verify Café now").click()
    page.wait_for_url(re.compile(r"/admin/$"))
    assert "Chain intact" in page.get_by_role("status").inner_text()


def test_the_key_table_is_not_clipped_at_1280_pixels(open_page, live_app):
    with live_app.app_context():
        for name in ("newsletter backend", "crm sync job", "analytics export"):
            issue_key(get_site_by_key(SITE), name, ["read", "write", "rights"])
        db.session.commit()
    page = open_page(f"/admin/sites/{SITE}/keys")
    page.set_viewport_size({"width": 1280, "height": 800})
    wrap = page.get_by_role("region", name="API keys")
    widths = wrap.evaluate("e => [e.scrollWidth, e.clientWidth]")
    assert widths[0] <= widths[1], f"table {widths[0]}px in a {widths[1]}px box"


@pytest.mark.parametrize(
    "path",
    [
        "/admin/",
        "/admin/account",
        "/admin/admins",
        f"/admin/sites/{SITE}",
        f"/admin/sites/{SITE}/edit",
        f"/admin/sites/{SITE}/purposes/analytics",
        f"/admin/sites/{SITE}/keys",
        f"/admin/sites/{SITE}/policies",
    ],
)
def test_tabs_and_pages_fit_a_360_pixel_screen(open_page, path):
    page = open_page(path)
    page.set_viewport_size({"width": 360, "height": 740})
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    for tab in page.locator("nav.sections a").all():
        box = tab.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 360, tab.inner_text()
