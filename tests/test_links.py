"""Links the service mints start with PUBLIC_URL, whatever Host the request named."""

from __future__ import annotations

import pytest
from helpers import bearer

PUBLIC_URL = "https://consent.example.com"


@pytest.fixture
def public_app(app_with):
    return app_with(PUBLIC_URL=PUBLIC_URL, RATELIMIT_ENABLED=False)


def test_unsubscribe_links_ignore_the_host_header(public_app, demo_site, make_key):
    secret = make_key(demo_site, "write")
    response = public_app.test_client().post(
        "/v1/server/unsubscribe-links",
        json={"purpose": "email_marketing", "emails": ["reader@example.com"]},
        headers={**bearer(secret), "Host": "evil.example"},
    )
    assert response.status_code == 201, response.get_json()
    [link] = response.get_json()["links"]
    assert link["url"].startswith(f"{PUBLIC_URL}/unsubscribe/")
    assert link["headers"]["List-Unsubscribe"] == f"<{link['url']}>"


def test_links_keep_the_public_url_path_prefix(app_with, demo_site, make_key):
    prefixed = app_with(PUBLIC_URL="https://example.com/consent/", RATELIMIT_ENABLED=False)
    secret = make_key(demo_site, "write")
    response = prefixed.test_client().post(
        "/v1/server/unsubscribe-links",
        json={"purpose": "email_marketing", "emails": ["reader@example.com"]},
        headers=bearer(secret),
    )
    [link] = response.get_json()["links"]
    assert link["url"].startswith("https://example.com/consent/unsubscribe/")
