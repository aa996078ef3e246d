"""The privacy-request form at /privacy/<site>: the short link the banner and the email
preference centre give, through HTTP (the browser tests fill it in for real)."""

from __future__ import annotations

import html
import re

import pytest
from sqlalchemy import select

from consent.db import db
from consent.models import RightsRequest

READER = "reader@example.com"


def requests_registered(app) -> list[tuple[str, str]]:
    with app.app_context():
        return db.session.execute(select(RightsRequest.kind, RightsRequest.channel)).all()


def send(client, site, fields: dict, headers=None):
    """Send the form as a browser on our page would (or with the headers given)."""
    headers = {"Sec-Fetch-Site": "same-origin"} if headers is None else headers
    return client.post(f"/privacy/{site}", data=fields, headers=headers)


def test_the_form_offers_every_kind_of_request_with_none_chosen(client, demo_site):
    page = client.get(f"/privacy/{demo_site}").text
    kinds = re.findall(r'<input type="radio" name="kind" value="(\w+)" required>', page)
    assert kinds == ["access", "export", "correction", "erasure", "objection"]
    assert "checked" not in page
    assert '<label for="email">Your email address</label>' in page


def test_a_request_from_the_form_emails_its_verification_link(app, client, demo_site, mailbox):
    response = send(client, demo_site, {"kind": "erasure", "email": READER, "message": "All."})
    assert response.status_code == 200
    assert "We sent you a link to confirm the request." in response.text
    assert requests_registered(app) == [("erasure", "web")]
    [body] = mailbox.bodies_to(READER)
    assert "https://consent.example/rights/verify/" in body


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"email": READER}, "Choose what you ask for."),
        ({"kind": "pigeons", "email": READER}, "Choose what you ask for."),
        ({"kind": "access", "email": "not-an-address"}, "Enter an email address like"),
        ({"kind": "access"}, "Enter an email address like"),
        ({"kind": "access", "email": READER, "message": "x" * 2001}, "Use at most 2000"),
    ],
    ids=["no kind", "unknown kind", "bad email", "no email", "long message"],
)
def test_bad_input_is_shown_beside_its_field_and_registers_nothing(
    app, client, demo_site, mailbox, fields, message
):
    response = send(client, demo_site, fields)
    assert response.status_code == 422
    assert re.search(rf'<p class="field-error" id="\w+-error">{message}', response.text)
    assert requests_registered(app) == []
    assert mailbox.messages == []


@pytest.mark.parametrize("field", ["email", "message"])
def test_text_no_database_can_store_is_refused_not_a_500(app, client, demo_site, field):
    fields = {"kind": "access", "email": READER, field: "a\x00b@example.com"}
    assert send(client, demo_site, fields).status_code == 422
    assert requests_registered(app) == []


def test_the_form_keeps_what_was_typed_when_it_is_refused(client, demo_site):
    response = send(client, demo_site, {"kind": "export", "email": "nope", "message": "Hi"})
    assert 'value="export" required checked' in response.text
    assert 'value="nope"' in response.text and ">Hi</textarea>" in response.text


@pytest.mark.parametrize(
    "headers",
    [{"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}],
    ids=["cross-site", "foreign origin"],
)
def test_a_form_sent_from_another_site_is_refused(app, client, demo_site, mailbox, headers):
    fields = {"kind": "access", "email": READER}
    response = send(client, demo_site, fields, headers)
    assert response.status_code == 403
    assert "The form could not be accepted." in response.text
    assert requests_registered(app) == []
    assert mailbox.messages == []


def test_the_form_is_rate_limited_like_the_api(app_with, demo_site):
    limited = app_with(RATELIMIT_RIGHTS_REQUEST="2/hour").test_client()
    answers = [send(limited, demo_site, {"kind": "access"}).status_code for _ in range(3)]
    assert answers == [422, 422, 429]
    refused = limited.post(f"/privacy/{demo_site}", data={})
    assert refused.headers["Retry-After"].isdigit()
    assert "Too many requests from this address." in refused.text


def test_the_form_speaks_the_readers_language(client, demo_site):
    page = html.unescape(client.get(f"/privacy/{demo_site}?lang=fr").text)
    assert '<html lang="fr">' in page and "Effacer mes données" in page


def test_without_email_the_request_is_not_registered(app, client, demo_site):
    response = send(client, demo_site, {"kind": "access", "email": READER})
    assert response.status_code == 503
    assert "Email cannot be sent just now." in response.text
    assert requests_registered(app) == []


def test_an_unknown_site_has_no_form(client):
    response = client.get("/privacy/no-such-site")
    assert response.status_code == 404
    assert "There is no privacy request form at this address." in response.text


def test_the_banner_config_links_to_the_form(client, demo_site):
    config = client.get(f"/v1/sites/{demo_site}/config").get_json()
    assert config["rights_request_url"] == f"http://127.0.0.1:5000/privacy/{demo_site}"
