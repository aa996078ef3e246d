"""The email preference centre and the privacy-request form in a real browser.

The page behind an unsubscribe link changes exactly the purposes chosen there, with the
records to prove it, without any script; bad links show the neutral page; the one-click
POST still unsubscribes; the forms work from the keyboard. The banner's preference
centre and the page link to the privacy-request form, which sends its email.
"""

from __future__ import annotations

import base64
import uuid

import pytest
from helpers import smtp_server
from integrity import site_records
from playwright.sync_api import Page, expect

from consent import ledger
from consent.db import db
from consent.sites import STANDARD_PURPOSES, create_site, get_site_by_key, set_purpose
from consent.subjects import find_or_create_subject_by
from consent.tokens import make_unsubscribe_token

pytestmark = pytest.mark.browser

READER = "reader@example.com"
LOGO = "https://shop.example/logo.png"
#: A 1x1 PNG, what the site's logo server answers.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
EMAIL_PURPOSES = {
    "newsletter": {"en": {"title": "Newsletter", "description": "What is new, monthly."}},
    "offers": {"en": {"title": "Offers", "description": "Sales and discounts."}},
    "events": {"en": {"title": "Events", "description": "Invitations near you."}},
}


@pytest.fixture
def reader(live_app) -> dict:
    """A shop with three email purposes; the reader subscribed to newsletter and offers.

    Returns the shop's key and the path of the reader's link from a newsletter email.
    """
    key = f"shop-{uuid.uuid4().hex[:8]}"
    with live_app.app_context():
        site = create_site(key, "Corner shop")
        site.logo_url = LOGO
        site.controller_name = "Corner Shop Ltd"
        for position, purpose in enumerate(STANDARD_PURPOSES):
            set_purpose(site, position=position, **purpose)
        for purpose, translations in EMAIL_PURPOSES.items():
            set_purpose(
                site, purpose, kind="communication", is_required=False, translations=translations
            )
        subject = find_or_create_subject_by(site, "email", READER)
        ledger.record_decision(
            site,
            subject,
            [{"purpose": "newsletter", "granted": True}, {"purpose": "offers", "granted": True}],
            source="api",
        )
        token = make_unsubscribe_token(key, subject.pseudonym, "newsletter")
        db.session.commit()
    return {"site": key, "link": f"/unsubscribe/{token}"}


def records(live_app, site_key: str) -> list[tuple[str, list[dict]]]:
    """The shop's history, oldest first: (source, decisions) of each record."""
    with live_app.app_context():
        return [(row.source, row.decisions) for row in site_records(get_site_by_key(site_key))]


def section(page: Page, title: str):
    return page.get_by_role("region", name=title)


def open_centre(new_context, link: str, **options) -> Page:
    """Open the link in a fresh browser; the logo's server answers with a PNG."""
    page = new_context(**options).new_page()
    page.route(LOGO, lambda route: route.fulfill(body=PNG, content_type="image/png"))
    page.goto(link)
    return page


def refused(*keys: str) -> list[dict]:
    return [{"purpose": key, "granted": False} for key in keys]


def test_unsubscribing_from_one_purpose_changes_only_that_one_without_script(
    new_context, live_app, reader
):
    page = open_centre(new_context, reader["link"], java_script_enabled=False)
    expect(section(page, "Offers")).to_contain_text("Subscribed")
    section(page, "Offers").get_by_role("button", name="Unsubscribe").click()
    expect(page.get_by_role("status")).to_have_text("Your choice is saved.")
    expect(section(page, "Offers")).to_contain_text("Not subscribed")
    expect(section(page, "Newsletter")).to_contain_text("Subscribed")
    assert records(live_app, reader["site"])[1:] == [("unsubscribe", refused("offers"))]


def test_unsubscribing_from_all_refuses_every_email_purpose_in_one_record(page, live_app, reader):
    page.goto(reader["link"])
    page.get_by_role("button", name="Unsubscribe from all").click()
    for title in ("Newsletter", "Offers", "Events"):
        expect(section(page, title)).to_contain_text("Not subscribed")
    assert records(live_app, reader["site"])[1:] == [
        ("unsubscribe", refused("events", "newsletter", "offers"))
    ]


def test_subscribing_again_is_recorded_from_the_preference_centre(page, live_app, reader):
    page.goto(reader["link"])
    section(page, "Events").get_by_role("button", name="Subscribe again").click()
    expect(section(page, "Events")).to_contain_text("Subscribed")
    expect(section(page, "Events").get_by_role("button")).to_have_text("Unsubscribe")
    assert records(live_app, reader["site"])[1:] == [
        ("preferences", [{"purpose": "events", "granted": True}])
    ]


def test_the_forms_work_from_the_keyboard_and_name_their_purpose(page, live_app, reader):
    page.goto(reader["link"])
    button = section(page, "Newsletter").get_by_role("button", name="Unsubscribe")
    expect(button).to_have_accessible_description("Newsletter Subscribed")
    for _ in range(10):
        page.keyboard.press("Tab")
        if button.evaluate("element => element === document.activeElement"):
            break
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_have_text("Your choice is saved.")
    assert records(live_app, reader["site"])[1:] == [("unsubscribe", refused("newsletter"))]


def test_the_page_shows_the_sites_logo_name_and_controller(new_context, reader):
    page = open_centre(new_context, reader["link"])
    logo = page.locator("img.logo")
    expect(logo).to_be_visible()
    assert logo.evaluate("image => image.naturalWidth") == 1  # the CSP let it load
    expect(page.get_by_text("Corner shop", exact=True)).to_be_visible()
    expect(page.get_by_text("Responsible for your data: Corner Shop Ltd")).to_be_visible()


def test_a_bad_link_shows_the_neutral_page_and_changes_nothing(page, live_app, reader):
    page.goto(reader["link"][:-3] + "xyz")
    expect(page.get_by_role("heading")).to_have_text("This link does not work")
    expect(page.get_by_role("button")).to_have_count(0)
    assert len(records(live_app, reader["site"])) == 1


def test_the_one_click_post_still_unsubscribes_from_the_emails_purpose(page, live_app, reader):
    answer = page.request.post(reader["link"], form={"List-Unsubscribe": "One-Click"})
    assert answer.status == 200
    assert "You are unsubscribed" in answer.text()
    assert records(live_app, reader["site"])[1:] == [("unsubscribe", refused("newsletter"))]


@pytest.fixture
def mailbox(live_app, live_server, monkeypatch):
    """A local SMTP server for the live app; its links start at the live server."""
    with smtp_server() as (box, url):
        monkeypatch.setitem(live_app.config, "SMTP_URL", url)
        monkeypatch.setitem(live_app.config, "PUBLIC_URL", live_server)
        yield box


def test_a_privacy_request_from_the_preference_centre_sends_its_email(
    page, live_server, reader, mailbox
):
    page.goto(reader["link"])
    page.get_by_role("link", name="Make a privacy request").click()
    expect(page).to_have_url(f"{live_server}/privacy/{reader['site']}")
    page.get_by_label("Delete my data").check()
    page.get_by_label("Your email address").fill(READER)
    page.get_by_label("Your email address").press("Enter")
    expect(page.get_by_role("heading")).to_have_text("Check your email")
    [message] = mailbox.messages
    assert message["To"] == READER
    assert f"{live_server}/rights/verify/" in message.get_payload(decode=True).decode()


def test_a_privacy_request_form_error_is_shown_beside_its_field(page, reader):
    page.goto(f"/privacy/{reader['site']}")
    page.get_by_label("Your email address").fill("not-an-address")
    page.get_by_role("button", name="Send the request").click()
    expect(page.get_by_label("Your email address")).to_have_accessible_description(
        "We send a link to this address to confirm the request. "
        "Enter an email address like name@example.com."
    )
    expect(page.get_by_role("group", name="What do you ask for?")).to_have_accessible_description(
        "Choose what you ask for."
    )


def test_the_banners_preference_centre_links_to_the_privacy_request_form(
    page, live_server, monkeypatch, live_app
):
    monkeypatch.setitem(live_app.config, "PUBLIC_URL", live_server)
    page.goto("/")
    page.get_by_role("dialog", name="Your privacy choices").get_by_role(
        "button", name="Customise"
    ).click()
    centre = page.get_by_role("dialog", name="Cookie settings")
    link = centre.get_by_role("link", name="Make a privacy request")
    expect(link).to_have_attribute("href", f"{live_server}/privacy/demo")
