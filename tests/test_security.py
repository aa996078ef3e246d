"""Browser security, API side: CORS, strict CSP and HSTS, cookies, quiet logs.

Shown elsewhere and not repeated here: the allowed origin gets CORS headers, and a
foreign or ``null`` origin gets none on the banner config and cannot record
(tests/test_public_api.py); a ``text/plain``, form or other non-JSON body gets 415 on
every JSON route (tests/test_bad_input.py); the admin session cookie is HttpOnly,
SameSite=Lax, and Secure once HTTPS is forced (tests/test_admin.py).
"""

from __future__ import annotations

import logging
import re

import pytest
from helpers import ACCEPT_ALL, bearer, submit
from scan_factory import cookie, store_scan
from sqlalchemy import func, select
from test_admin import ADMIN_PAGES, sign_in

from consent import validation
from consent.admin.auth import set_admin_password
from consent.admin.roles import grant_role
from consent.db import db
from consent.models import API_SCOPES, BannerImpression, ConsentRecord

SHOP = "https://shop.example"
#: Origins that must never be let in for a site that allows only SHOP.
FOREIGN_ORIGINS = [
    "https://evil.example",
    "null",
    "https://shop.example.evil.example",
    "https://evil.example/https://shop.example",
    "http://shop.example",
    "https://shop.example:8443",
    "https://www.shop.example",
    "https://shop.exampl",
    "https://shop.example.",
    "https://shop.example\x00",
]
CORS_HEADERS = (
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Credentials",
    "Access-Control-Allow-Headers",
    "Access-Control-Allow-Methods",
)


@pytest.fixture(autouse=True)
def _push_request_context():
    """Each request gets its own app context, as in production (see tests/test_admin.py)."""


@pytest.fixture
def shop(make_site) -> str:
    return make_site("shop", origins=[SHOP])


def public_requests(site: str, token: str) -> list[tuple[str, str, dict]]:
    """Every public route, the way the banner calls it, and a preflight for each."""
    base = f"/v1/sites/{site}"
    calls = [
        ("GET", f"{base}/config", {}),
        (
            "GET",
            f"{base}/check",
            {"query_string": {"purpose": "analytics"}, "headers": {"X-Consent-Token": token}},
        ),
        ("GET", f"{base}/me", {"headers": {"X-Consent-Token": token}}),
        (
            "POST",
            f"{base}/records",
            {"json": {"decisions": ACCEPT_ALL}, "headers": {"X-Consent-Token": token}},
        ),
        ("POST", f"{base}/shown", {}),
        ("GET", "/v1/sites/no-such-site/config", {}),
        ("POST", f"{base}/records", {"json": {"decisions": []}}),
    ]
    preflights = [
        (
            "OPTIONS",
            path,
            {
                "headers": {
                    "Access-Control-Request-Method": method,
                    "Access-Control-Request-Headers": "content-type",
                }
            },
        )
        for method, path, _ in calls
    ]
    return calls + preflights


def written(app) -> tuple[int, int]:
    """Records and banner displays counted so far."""
    with app.app_context():
        return (
            db.session.scalar(select(func.count()).select_from(ConsentRecord)),
            db.session.scalar(select(func.coalesce(func.sum(BannerImpression.count), 0))),
        )


def send(client, method, path, request, origin):
    headers = {**request.get("headers", {}), "Origin": origin}
    return client.open(path, method=method, **{**request, "headers": headers})


@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
def test_foreign_origin_gets_no_cors_and_writes_nothing_anywhere(app, client, shop, tally, origin):
    token = submit(client, shop, ACCEPT_ALL).get_json()["visitor_token"]
    before = written(app)
    for method, path, request in public_requests(shop, token):
        response = send(client, method, path, request, origin)
        present = [name for name in CORS_HEADERS if name in response.headers]
        if method == "GET" and path.endswith("/config"):
            # The refusal, and only it, is readable: the banner names the fix in the console.
            assert response.status_code in (403, 404)
            assert "purposes" not in response.get_json()
            is_origin = validation.is_origin(origin) or origin == "null"
            assert present == (["Access-Control-Allow-Origin"] if is_origin else []), present
        else:
            assert not present, (method, path, present)
        if method == "POST" and request.get("json", {}).get("decisions") != []:
            assert response.status_code == 403, (method, path, response.get_json())
            assert response.get_json()["error"] == "forbidden"
        assert written(app) == before, (method, path)
        tally["cross-origin requests refused"] += 1


def test_allowed_origin_gets_cors_on_every_public_route_but_never_credentials(client, shop):
    # The counterpart of the test above: the same requests from the site's own origin.
    token = submit(client, shop, ACCEPT_ALL).get_json()["visitor_token"]
    for method, path, request in public_requests(shop, token):
        response = send(client, method, path, request, SHOP)
        if "no-such-site" in path:
            # Only the banner's configuration says so readably (the banner logs it).
            expected = SHOP if path.endswith("/config") and method == "GET" else None
            assert response.headers.get("Access-Control-Allow-Origin") == expected, path
            continue
        assert response.headers.get("Access-Control-Allow-Origin") == SHOP, (method, path)
        assert "Origin" in response.headers.get("Vary", ""), (method, path)
        assert "Access-Control-Allow-Credentials" not in response.headers


def test_server_api_never_answers_a_browser(client, shop, make_key):
    # The site's own origin included: the server API is for the site's backend only.
    key = make_key(shop, *API_SCOPES)
    for method, path in [
        ("GET", "/v1/server/check"),
        ("POST", "/v1/server/records"),
        ("POST", "/v1/server/bulk-check"),
        ("GET", "/v1/server/suppression"),
    ]:
        for request_method in (method, "OPTIONS"):
            response = client.open(
                path,
                method=request_method,
                json={} if method == "POST" else None,
                headers={**bearer(key), "Origin": SHOP, "Access-Control-Request-Method": method},
            )
            assert "Access-Control-Allow-Origin" not in response.headers, (request_method, path)


# --- every HTML page: strict CSP, HSTS ---------------------------------------------

#: Pages outside the admin (whose pages are listed in tests/test_admin.py).
PAGES = [
    ("GET", "/"),
    ("GET", "/?lang=fr&bundle=1"),
    ("GET", "/privacy"),
    ("GET", "/demo/embed"),
    ("GET", "/unsubscribe/any-token"),
    ("POST", "/unsubscribe/any-token"),
    ("GET", "/rights/verify/any-token"),
    ("POST", "/rights/verify/any-token"),
    ("GET", "/rights/download/any-token"),
    ("GET", "/privacy/demo"),
    ("POST", "/privacy/demo"),
    ("GET", "/admin/sign-in"),
    ("GET", "/v1/docs"),
    ("GET", "/no-such-page"),
    ("DELETE", "/privacy"),
]


def test_every_page_is_listed(app):
    """A new page must join PAGES (or ADMIN_PAGES), so the CSP test below covers it."""
    routes = {
        rule.rule
        for rule in app.url_map.iter_rules()
        if not rule.endpoint.startswith(("public.", "server.", "api-docs.", "wellknown.", "ops."))
        and rule.endpoint
        not in ("static", "widget.asset", "api-reference.static", "api-reference.widget_types")
        and not (rule.endpoint.startswith("admin.") and rule.endpoint != "admin.sign_in")
    }
    placeholders = {"/any-token": "/<token>", "/demo": "/<site_key>"}
    listed = {
        re.sub(r"\?.*|/any-token|(?<=/privacy)/demo", lambda m: placeholders.get(m[0], ""), path)
        for _, path in PAGES
    }
    assert routes <= listed, routes - listed


def directives(policy: str) -> dict[str, list[str]]:
    return {
        name: values
        for name, *values in (part.split() for part in policy.split(";") if part.strip())
    }


def assert_strict_page(response, page) -> None:
    """HTML with a CSP that allows no inline or foreign script, and HSTS."""
    assert response.mimetype == "text/html", page
    policy = directives(response.headers["Content-Security-Policy"])
    scripts = policy.get("script-src", policy.get("default-src"))
    assert scripts, (page, policy)
    forbidden = {"'unsafe-inline'", "'unsafe-eval'", "*", "data:", "http:", "https:"}
    assert not forbidden & set(scripts), (page, scripts)
    assert policy["object-src"] == ["'none'"], page
    assert policy["base-uri"] == ["'none'"], page
    assert policy["frame-ancestors"] in (["'none'"], ["'self'"]), page
    assert response.headers["Strict-Transport-Security"].startswith("max-age=31536000"), page
    assert response.headers["X-Content-Type-Options"] == "nosniff", page


def test_every_html_page_has_a_strict_csp_and_hsts(app, client, demo_site, tally):
    for method, page in PAGES:
        response = client.open(
            page,
            method=method,
            base_url="https://localhost",
            data={"List-Unsubscribe": "One-Click"} if method == "POST" else None,
        )
        assert_strict_page(response, page)
        tally["HTML pages checked for CSP and HSTS"] += 1


def test_every_admin_page_has_a_strict_csp_and_hsts(app, client, make_site, tally):
    make_site("shop")
    store_scan(app, "shop", cookie("_ga"))  # for the pages of scan 1
    with app.app_context():
        grant_role(set_admin_password("ada", "correct horse battery staple"), "owner")
        db.session.commit()
    assert sign_in(client).status_code == 302
    for page in ADMIN_PAGES:
        response = client.get(page, base_url="https://localhost")
        assert response.status_code == 200, page
        if page.endswith(".csv"):
            continue
        assert_strict_page(response, page)
        tally["HTML pages checked for CSP and HSTS"] += 1


def test_api_answers_carry_hsts_and_nosniff_over_https(client, demo_site, make_key):
    key = make_key(demo_site, "read")
    for path, headers in [
        (f"/v1/sites/{demo_site}/config", {}),
        ("/v1/server/check?purpose=analytics&user_id=u", bearer(key)),
        ("/v1/server/check?purpose=analytics&user_id=u", {}),
        ("/v1/openapi.json", {}),
        ("/.well-known/gpc.json", {}),
        ("/widget/consent.js", {}),
    ]:
        response = client.get(path, headers=headers, base_url="https://localhost")
        assert response.headers["Strict-Transport-Security"].startswith("max-age="), path
        assert response.headers["X-Content-Type-Options"] == "nosniff", path


# --- cookies ------------------------------------------------------------------------


def test_no_cookie_is_set_outside_the_admin(client, demo_site, make_key, tally):
    # The visitor is known by a token the widget stores, never by a cookie of ours.
    key = make_key(demo_site, *API_SCOPES)
    token = submit(client, demo_site, ACCEPT_ALL).get_json()["visitor_token"]
    link = client.post(
        "/v1/server/unsubscribe-links",
        headers=bearer(key),
        json={"purpose": "email_marketing", "emails": ["ada@example.com"]},
    ).get_json()["links"][0]
    calls = [
        ("GET", page, {})
        for method, page in PAGES
        if method == "GET" and not page.startswith(("/admin", "/demo/embed"))
    ]
    calls += public_requests(demo_site, token)
    calls += [
        ("GET", "/widget/consent.js", {}),
        ("GET", "/widget/consent.js?site=demo", {}),
        ("GET", "/.well-known/gpc.json", {}),
        ("GET", "/v1/openapi.json", {}),
        (
            "GET",
            "/v1/server/check",
            {
                "query_string": {"purpose": "email_marketing", "email": "ada@example.com"},
                "headers": bearer(key),
            },
        ),
        ("GET", link["url"], {}),
        ("POST", link["url"], {"data": {"List-Unsubscribe": "One-Click"}}),
    ]
    for method, path, request in calls:
        response = client.open(path, method=method, **request)
        assert "Set-Cookie" not in response.headers, (method, path)
        tally["responses checked for cookies"] += 1


def test_the_demo_ad_frame_cookie_is_same_site(client):
    # The demo's stand-in for a third-party ad frame sets its own cookie, as one would;
    # the widget clears it on withdrawal, so it cannot be HttpOnly.
    cookie = client.get("/demo/embed").headers["Set-Cookie"]
    assert "SameSite=Lax" in cookie


# --- logs ---------------------------------------------------------------------------


def test_logs_hold_no_secret_and_no_email(app, client, demo_site, make_key, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="sqlalchemy.engine")  # statements, parameters
    key = make_key(demo_site, *API_SCOPES)
    emails = ["Grace.Hopper@Example.com", "ada@example.com"]
    token = submit(client, demo_site, ACCEPT_ALL).get_json()["visitor_token"]
    calls = [
        (
            "POST",
            "/v1/server/records",
            {
                "json": {
                    "email": emails[0],
                    "decisions": [{"purpose": "email_marketing", "granted": True}],
                }
            },
        ),
        ("POST", "/v1/server/links", {"json": {"visitor_token": token, "user_id": "u-77"}}),
        (
            "POST",
            "/v1/server/subjects/correct",
            {"json": {"user_id": "u-77", "field": "email", "value": emails[1]}},
        ),
        (
            "GET",
            "/v1/server/check",
            {"query_string": {"purpose": "email_marketing", "email": emails[0]}},
        ),
        (
            "POST",
            "/v1/server/bulk-check",
            {"json": {"purpose": "email_marketing", "emails": emails + ["not-an-email"]}},
        ),
        (
            "GET",
            "/v1/server/suppression",
            {"query_string": {"purpose": "email_marketing", "format": "csv"}},
        ),
        (
            "POST",
            "/v1/server/unsubscribe-links",
            {"json": {"purpose": "email_marketing", "emails": emails}},
        ),
        ("GET", "/v1/server/subjects/export", {"query_string": {"email": emails[1]}}),
        ("POST", "/v1/server/records", {"json": {"email": "bad@", "decisions": ACCEPT_ALL}}),
        ("POST", "/v1/server/subjects/erase", {"json": {"email": emails[0]}}),
    ]
    for method, path, request in calls:
        response = client.open(path, method=method, headers=bearer(key), **request)
        body = response.get_data(as_text=True)  # a streamed body is read to its end
        assert response.status_code < 500, (path, body)
        if path.endswith("unsubscribe-links"):
            for link in response.get_json()["links"]:
                client.post(link["url"], data={"List-Unsubscribe": "One-Click"})
    client.get("/v1/server/check?purpose=analytics&user_id=u", headers=bearer(key[:-3] + "xyz"))
    client.get(
        "/v1/server/check?purpose=analytics&user_id=u", headers={"Authorization": key}
    )  # no scheme: the whole secret, refused
    # The capture is real: the database layer logged every statement it ran.
    assert any(record.name.startswith("sqlalchemy.engine") for record in caplog.records)
    logged = caplog.text + "".join(repr(record.args) for record in caplog.records)
    secrets = {
        "SECRET_KEY": app.config["SECRET_KEY"],
        "DATA_KEY": app.config["DATA_KEY"],
        "API key": key,
        "API key secret": key.split(".", 1)[1],
        "visitor token": token,
    }
    for name, value in secrets.items():
        assert value not in logged, f"{name} was logged"
    for email in emails:
        for form in (email, email.lower()):
            assert form not in logged, f"{form} was logged"
    assert "u-77" not in logged, "a site user id was logged"
