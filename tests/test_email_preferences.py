"""The email preference centre behind every unsubscribe link, through HTTP.

The link's page lists the site's email purposes with the person's state and changes
exactly what the person chooses there, one record per choice; the one-click POST is
tested in tests/test_marketing.py, bad links in tests/test_bad_input.py.
"""

from __future__ import annotations

import html

import pytest
from helpers import bearer
from sqlalchemy import select

from consent.db import db
from consent.models import AccessLogEntry
from consent.sites import get_site_by_key, set_purpose

READER = "reader@example.com"
LOGO = "https://shop.example/logo.png"
EMAIL_PURPOSES = {
    "newsletter": {
        "en": {"title": "Newsletter", "description": "What is new, once a month."},
        "fr": {"title": "Lettre d'information", "description": "Les nouveautés, chaque mois."},
    },
    "offers": {
        "en": {"title": "Offers", "description": "Sales and discounts."},
        "fr": {"title": "Offres", "description": "Soldes et réductions."},
    },
}


@pytest.fixture
def shop(app, make_site) -> str:
    """A site in English and French with two email purposes, a logo and a controller."""
    key = make_site(languages=["en", "fr"])
    with app.app_context():
        site = get_site_by_key(key)
        site.controller_name = "Shop Ltd"
        site.controller_contact = "privacy@shop.example"
        site.logo_url = LOGO
        for purpose, translations in EMAIL_PURPOSES.items():
            set_purpose(
                site, purpose, kind="communication", is_required=False, translations=translations
            )
        db.session.commit()
    return key


@pytest.fixture
def server(client, shop, make_key):
    """Call the server API of the shop with every scope."""
    secret = make_key(shop, "read", "write", "rights")

    def call(method, url, **kwargs):
        response = getattr(client, method)(url, headers=bearer(secret), **kwargs)
        assert response.status_code < 300, response.get_json()
        return response.get_json()

    return call


def subscribe(server, **choices: bool) -> None:
    decisions = [{"purpose": key, "granted": granted} for key, granted in choices.items()]
    server("post", "/v1/server/records", json={"email": READER, "decisions": decisions})


@pytest.fixture
def link(server) -> str:
    """The path of the reader's unsubscribe link from a newsletter email."""
    minted = server(
        "post", "/v1/server/unsubscribe-links", json={"purpose": "newsletter", "emails": [READER]}
    )
    return "/unsubscribe/" + minted["links"][0]["url"].rsplit("/", 1)[1]


def allowed(server, purpose: str) -> str:
    query = {"purpose": purpose, "email": READER}
    return server("get", "/v1/server/check", query_string=query)["reason"]


def history(server) -> list[dict]:
    return server("get", "/v1/server/subjects/export", query_string={"email": READER})["history"]


def act(client, link, action, purpose=None, **headers):
    data = {"action": action, **({"purpose": purpose} if purpose else {})}
    return client.post(link, data=data, headers=headers)


def test_the_page_lists_every_email_purpose_with_its_state(client, server, link):
    subscribe(server, newsletter=True, offers=False)
    page = client.get(link).text
    newsletter, offers = page.index("Newsletter"), page.index("Offers")
    assert "What is new, once a month." in page and "Sales and discounts." in page
    assert page.index("Subscribed", newsletter) < offers < page.index("Not subscribed", offers)
    assert "Analytics" not in page  # cookie purposes are the banner's, not the email's


def test_the_page_is_branded_with_the_sites_name_logo_and_controller(client, server, link):
    page = client.get(link).text
    assert '<p class="site-name">Test site</p>' in page
    assert f'<img class="logo" src="{LOGO}" alt="" referrerpolicy="no-referrer">' in page
    assert "Responsible for your data: Shop Ltd, privacy@shop.example" in page


@pytest.mark.parametrize(
    ("query", "headers"),
    [({"lang": "fr"}, {}), ({}, {"Accept-Language": "fr-CA,fr;q=0.9,en;q=0.5"})],
    ids=["lang parameter", "Accept-Language"],
)
def test_the_page_speaks_the_readers_language(client, server, link, query, headers):
    page = html.unescape(client.get(link, query_string=query, headers=headers).text)
    assert '<html lang="fr">' in page
    assert "Préférences d'e-mails" in page and "Lettre d'information" in page


def test_a_language_the_site_lacks_falls_back_to_its_default(client, server, link):
    page = client.get(link, headers={"Accept-Language": "de"}).text
    assert '<html lang="en">' in page and "Email preferences" in page


def test_the_page_allows_the_logo_and_keeps_the_link_to_itself(client, server, link):
    response = client.get(link)
    assert "img-src 'self' data: https: http:;" in response.headers["Content-Security-Policy"]
    assert "script-src" in response.headers["Content-Security-Policy"]  # still strict
    assert response.headers["Cache-Control"] == "no-store"
    assert '<meta name="referrer" content="no-referrer">' in response.text


def test_the_page_links_to_the_privacy_request_form(client, server, link, shop):
    assert f'href="http://127.0.0.1:5000/privacy/{shop}"' in client.get(link).text


def test_opening_the_page_changes_nothing(client, server, link, record_count):
    subscribe(server, newsletter=True)
    before = record_count()
    assert client.get(link).status_code == 200
    assert record_count() == before
    assert allowed(server, "newsletter") == "granted"


def test_opening_the_page_is_written_to_the_access_log(app, client, server, link):
    subscribe(server, newsletter=True)
    export = server("get", "/v1/server/subjects/export", query_string={"email": READER})
    pseudonym = export["subject"]["pseudonym"]
    client.get(link)
    with app.app_context():
        last = select(AccessLogEntry).order_by(AccessLogEntry.id.desc()).limit(1)
        entry = db.session.scalars(last).one()
        assert (entry.actor, entry.action, entry.subject_pseudonym) == (
            "person",
            "preferences",
            pseudonym,
        )


def test_unsubscribing_from_one_purpose_changes_only_that_one(client, server, link, record_count):
    subscribe(server, newsletter=True, offers=True)
    before = record_count()
    response = act(client, link, "unsubscribe", "offers")
    assert response.status_code == 200
    assert "Your choice is saved." in response.text
    assert record_count() == before + 1
    assert history(server)[-1]["decisions"] == [{"purpose": "offers", "granted": False}]
    assert history(server)[-1]["source"] == "unsubscribe"
    assert (allowed(server, "newsletter"), allowed(server, "offers")) == ("granted", "withdrawn")


def test_unsubscribing_from_all_refuses_every_email_purpose_in_one_record(
    client, server, link, record_count
):
    subscribe(server, newsletter=True, offers=True)
    before = record_count()
    act(client, link, "unsubscribe-all")
    assert record_count() == before + 1
    assert history(server)[-1]["decisions"] == [
        {"purpose": "newsletter", "granted": False},
        {"purpose": "offers", "granted": False},
    ]
    assert (allowed(server, "newsletter"), allowed(server, "offers")) == ("withdrawn", "withdrawn")


def test_subscribing_again_records_a_grant_from_the_preference_centre(client, server, link):
    subscribe(server, newsletter=False)
    response = act(client, link, "subscribe", "newsletter", **{"Accept-Language": "fr"})
    assert response.status_code == 200
    last = history(server)[-1]
    assert last["decisions"] == [{"purpose": "newsletter", "granted": True}]
    assert (last["source"], last["language"]) == ("preferences", "fr")
    assert allowed(server, "newsletter") == "granted"


@pytest.mark.parametrize(
    ("choices", "action", "purpose"),
    [
        ({"newsletter": False}, "unsubscribe", "newsletter"),
        ({"newsletter": True}, "subscribe", "newsletter"),
        ({"newsletter": False, "offers": False}, "unsubscribe-all", None),
    ],
    ids=["unsubscribe while refused", "subscribe while subscribed", "all while all refused"],
)
def test_a_choice_already_in_force_records_nothing(
    client, server, link, record_count, choices, action, purpose
):
    subscribe(server, **choices)
    before = record_count()
    assert act(client, link, action, purpose).status_code == 200
    assert record_count() == before


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "https://evil.example"},
    ],
    ids=["cross-site", "same-site", "foreign origin"],
)
def test_a_page_action_sent_from_another_site_is_refused(
    client, server, link, record_count, headers
):
    subscribe(server, newsletter=False)
    before = record_count()
    response = act(client, link, "subscribe", "newsletter", **headers)
    assert response.status_code == 403
    assert "Open the page again and send it from there." in response.text
    assert record_count() == before


@pytest.mark.parametrize(
    "headers",
    [{"Sec-Fetch-Site": "same-origin"}, {"Origin": "null"}, {"Origin": "http://127.0.0.1:5000"}],
    ids=["same-origin", "no referrer", "our origin"],
)
def test_a_page_action_from_our_own_page_is_taken(client, server, link, headers):
    subscribe(server, newsletter=False)
    assert act(client, link, "subscribe", "newsletter", **headers).status_code == 200
    assert allowed(server, "newsletter") == "granted"


@pytest.mark.parametrize(
    ("action", "purpose"),
    [
        ("subscribe", "analytics"),  # a cookie purpose: the banner's to ask
        ("subscribe", "necessary"),
        ("subscribe", "pigeons"),
        ("subscribe", None),
        ("delete", "newsletter"),
    ],
)
def test_a_page_action_names_an_email_purpose_of_the_site(
    client, server, link, record_count, action, purpose
):
    before = record_count()
    response = act(client, link, action, purpose)
    assert response.status_code == 422
    assert "The form could not be accepted." in response.text
    assert record_count() == before


def test_an_erased_persons_link_shows_the_neutral_page(client, server, link, record_count):
    subscribe(server, newsletter=True)
    server("post", "/v1/server/subjects/erase", json={"email": READER, "reason": "asked by email"})
    before = record_count()
    for response in (client.get(link), act(client, link, "subscribe", "newsletter")):
        assert response.status_code == 200
        assert "This link does not work" in response.text
        assert "Newsletter" not in response.text
    assert record_count() == before


def test_the_neutral_page_speaks_the_readers_language(client):
    page = client.get("/unsubscribe/not-a-link", headers={"Accept-Language": "sv"}).text
    assert '<html lang="sv">' in page and "Den här länken fungerar inte" in page
