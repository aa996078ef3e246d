"""The admin console through the test client: sign-in, CSRF, every page and feature.

CSRF protection stays on (as in production): each POST carries the token read from
the rendered form, the way a browser sends it.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import re
from datetime import timedelta

import pytest
from helpers import ACCEPT_ALL, CSRF_INPUT, REJECT_ALL, bearer, csrf_token, submit
from scan_factory import cookie, store_scan
from sqlalchemy import func, select, update
from webhook_receiver import start_receiver

from consent import create_app
from consent.admin.auth import set_admin_password
from consent.admin.models import AdminUser, SignInFailure
from consent.admin.roles import grant_role
from consent.db import db, now_utc
from consent.keys import issue_key
from consent.models import (
    AccessLogEntry,
    ApiKey,
    ConsentRecord,
    Purpose,
    Subject,
    VerificationRun,
    WebhookDelivery,
    WebhookEndpoint,
)
from consent.sites import banner_config, get_site_by_key

NAME, PASSWORD = "ada", "correct horse battery staple"


@pytest.fixture(autouse=True)
def _push_request_context():
    """Give each request its own app context and ``g``, as in production.

    Overrides pytest-flask's fixture of that name, whose one context for the whole test
    would keep the first CSRF token in ``g`` while sign-in starts a fresh session.
    """


@pytest.fixture
def admin_account(app):
    with app.app_context():
        grant_role(set_admin_password(NAME, PASSWORD), "owner")
        db.session.commit()


def post_form(client, url: str, data: dict | None = None, *, page: str | None = None, **kwargs):
    """POST a form with the token taken from ``page`` (by default the form's own URL)."""
    token = csrf_token(client, page or url)
    return client.post(url, data={"csrf_token": token, **(data or {})}, **kwargs)


def sign_in(client, name=NAME, password=PASSWORD):
    return post_form(client, "/admin/sign-in", {"name": name, "password": password})


@pytest.fixture
def admin(client, admin_account):
    """The test client, signed in as an admin."""
    assert sign_in(client).status_code == 302
    return client


@pytest.fixture
def site_key(make_site):
    return make_site("shop")


def invoke(app, runner, *args, **kwargs):
    """Run a CLI command the way ``consent <command>`` does: inside an app context."""
    with app.app_context():
        return runner.invoke(args=list(args), **kwargs)


def in_app(app, query):
    with app.app_context():
        return query()


# --- sign-in ---------------------------------------------------------------------------


def test_sign_in_opens_the_dashboard(client, admin_account, site_key):
    response = sign_in(client)
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/"
    page = client.get("/admin/")
    assert page.status_code == 200
    assert "Signed in as" in page.text and "Test site" in page.text


def test_wrong_password_shows_a_message_and_no_session(client, admin_account):
    response = sign_in(client, password="wrong password!")
    assert response.status_code == 200
    assert "Wrong name or password." in response.text
    assert client.get("/admin/").status_code == 302


def test_repeated_failures_lock_the_name_even_for_the_right_password(client, admin_account):
    for _ in range(5):
        assert "Wrong name or password." in sign_in(client, password="nope nope nope").text
    response = sign_in(client)
    assert response.status_code == 429
    assert "Too many failed attempts" in response.text
    assert int(response.headers["Retry-After"]) > 0
    assert client.get("/admin/").status_code == 302


def test_unknown_names_lock_like_known_ones(client, admin_account):
    for _ in range(5):
        sign_in(client, name="mallory", password="whatever it is")
    assert sign_in(client, name="mallory", password="whatever it is").status_code == 429


def test_lockout_ends_after_its_time(app, client, admin_account):
    for _ in range(5):
        sign_in(client, password="nope nope nope")
    with app.app_context():
        db.session.execute(update(SignInFailure).values(locked_until=now_utc() - timedelta(1)))
        db.session.commit()
    assert sign_in(client).status_code == 302


def test_failures_that_no_longer_count_are_pruned(app, client, admin_account):
    for name in ("old-guess", "locked-guess", "recent-guess"):
        sign_in(client, name=name, password="whatever it is")
    with app.app_context():
        long_ago = now_utc() - timedelta(hours=1)
        db.session.execute(
            update(SignInFailure)
            .where(SignInFailure.name.in_(["old-guess", "locked-guess"]))
            .values(last_failed_at=long_ago)
        )
        db.session.execute(
            update(SignInFailure)
            .where(SignInFailure.name == "locked-guess")
            .values(locked_until=now_utc() + timedelta(minutes=5))
        )
        db.session.commit()
    sign_in(client, name="another-guess", password="whatever it is")
    names = in_app(app, lambda: set(db.session.scalars(select(SignInFailure.name))))
    assert names == {"locked-guess", "recent-guess", "another-guess"}


def test_success_forgets_earlier_failures(app, client, admin_account):
    sign_in(client, password="nope nope nope")
    sign_in(client)
    assert in_app(app, lambda: db.session.scalars(select(SignInFailure)).all()) == []


def test_sign_out_ends_the_session(admin):
    response = post_form(admin, "/admin/sign-out", page="/admin/")
    assert response.status_code == 302
    assert admin.get("/admin/").status_code == 302


def test_sign_in_returns_to_the_page_asked_for(client, admin_account, site_key):
    assert client.get("/admin/sites/shop/keys").headers["Location"] == (
        "/admin/sign-in?next=/admin/sites/shop/keys"
    )
    token = csrf_token(client, "/admin/sign-in")
    response = client.post(
        "/admin/sign-in?next=/admin/sites/shop/keys",
        data={"csrf_token": token, "name": NAME, "password": PASSWORD},
    )
    assert response.headers["Location"] == "/admin/sites/shop/keys"


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/admin/", "/v1/x"])
def test_sign_in_never_redirects_outside_the_admin(client, admin_account, target):
    token = csrf_token(client, "/admin/sign-in")
    response = client.post(
        "/admin/sign-in",
        query_string={"next": target},
        data={"csrf_token": token, "name": NAME, "password": PASSWORD},
    )
    assert response.headers["Location"] == "/admin/"


def test_session_cookie_is_http_only_and_lax_over_plain_http_in_development(client, admin_account):
    cookie = sign_in(client).headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie


def test_session_cookie_is_secure_when_https_is_forced(app, admin_account):
    secure_app = create_app(
        {**app.config, "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"], "FORCE_HTTPS": True}
    )
    client = secure_app.test_client()
    response = client.get("/admin/sign-in")
    assert response.status_code == 302  # plain http is sent to https
    assert response.headers["Location"] == "https://localhost/admin/sign-in"
    form = client.get("/admin/sign-in", base_url="https://localhost")
    assert "Secure" in form.headers["Set-Cookie"]
    token = CSRF_INPUT.search(form.text).group(1)
    response = client.post(
        "/admin/sign-in",
        base_url="https://localhost",
        data={"csrf_token": token, "name": NAME, "password": PASSWORD},
    )
    assert response.status_code == 302
    assert "Secure" in response.headers["Set-Cookie"]
    with secure_app.app_context():
        db.engine.dispose()


# --- every page needs a signed-in admin, every form a CSRF token ---------------------

ADMIN_PAGES = [
    "/admin/",
    "/admin/sites/new",
    "/admin/sites/shop",
    "/admin/sites/shop/edit",
    "/admin/sites/shop/purposes",
    "/admin/sites/shop/purposes/new",
    "/admin/sites/shop/purposes/analytics",
    "/admin/sites/shop/policies",
    "/admin/sites/shop/keys",
    "/admin/sites/shop/rates",
    "/admin/sites/shop/rates.csv",
    "/admin/sites/shop/records",
    "/admin/sites/shop/people",
    "/admin/sites/shop/scans",
    "/admin/sites/shop/scans/1",
    "/admin/sites/shop/scans/1/inventory/analytics",
    "/admin/sites/shop/rights-requests",
    "/admin/access-log",
    "/admin/access-log.csv",
    "/admin/sites/shop/webhooks",
    "/admin/account",
    "/admin/admins",
]
#: Pages about one row (tested with their row below); the sign-in test covers them too.
ADMIN_ROW_PAGES = [
    "/admin/sites/shop/banner-versions/HASH",
    "/admin/sites/shop/rights-requests/REFERENCE",
]
#: How the pages above name the URL rules' variables.
PAGE_VARIABLES = {
    "/shop": "/<site_key>",
    "/purposes/analytics": "/purposes/<purpose_key>",
    "/scans/1": "/scans/<int:scan_id>",
    "/inventory/analytics": "/inventory/<purpose_key>",
    "/HASH": "/<config_hash>",
    "/REFERENCE": "/<reference>",
}


def test_every_admin_page_is_listed(app):
    """A new GET route must join ADMIN_PAGES, so the sign-in test below covers it."""
    rules = {
        rule.rule
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("admin.")
        and "GET" in rule.methods
        and rule.endpoint != "admin.sign_in"
    }
    listed = {
        re.sub("|".join(PAGE_VARIABLES), lambda m: PAGE_VARIABLES[m.group(0)], page)
        for page in ADMIN_PAGES + ADMIN_ROW_PAGES
    }
    assert rules == listed


@pytest.mark.parametrize("page", ADMIN_PAGES + ADMIN_ROW_PAGES)
def test_every_admin_page_needs_sign_in(client, site_key, page):
    response = client.get(page)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/admin/sign-in?next=")


@pytest.mark.parametrize("page", ADMIN_PAGES)
def test_every_admin_page_renders_for_an_admin(app, admin, site_key, page):
    store_scan(app, site_key, cookie("_ga"))
    response = admin.get(page)
    assert response.status_code == 200, response.text
    assert "nonce" not in response.headers.get("Content-Security-Policy", "").split("style-src")[1]


FORM_POSTS = [
    ("/admin/sign-out", {}),
    (
        "/admin/sites/new",
        {
            "key": "other",
            "name": "Other",
            "languages": "en",
            "lifetime_days": "30",
            "retention_days": "60",
        },
    ),
    (
        "/admin/sites/shop/edit",
        {"name": "Renamed", "languages": "en", "lifetime_days": "30", "retention_days": "60"},
    ),
    ("/admin/sites/shop/purposes/new", {"key": "extra", "kind": "cookie"}),
    ("/admin/sites/shop/purposes/analytics", {"kind": "cookie"}),
    ("/admin/sites/shop/purposes/analytics/move", {"direction": "up"}),
    ("/admin/sites/shop/policies", {"version": "v9"}),
    ("/admin/sites/shop/keys", {"name": "backend", "scopes": "read"}),
    ("/admin/sites/shop/keys/PREFIX/revoke", {}),
    ("/admin/sites/shop/verify", {}),
    ("/admin/sites/shop/people", {"kind": "visitor_id", "value": "x"}),
    ("/admin/sites/shop/people/export", {"pseudonym": "x", "format": "json", "reason": "t"}),
    ("/admin/sites/shop/people/erase", {"pseudonym": "x", "step": "ask"}),
    ("/admin/sites/shop/people/erase", {"pseudonym": "x", "confirmed": "y", "reason": "t"}),
    ("/admin/sites/shop/scans", {"urls": "https://shop.example/", "pages": "1"}),
    ("/admin/sites/shop/rights-requests", {"kind": "access", "email": "ada@example.com"}),
    ("/admin/sites/shop/rights-requests/REFERENCE", {"action": "complete"}),
    ("/admin/sites/shop/webhooks", {"url": "https://crm.example/hook", "events": "subject.erased"}),
    ("/admin/sites/shop/webhooks/ENDPOINT/active", {}),
    ("/admin/sites/shop/webhooks/deliveries/DELIVERY/again", {}),
    ("/admin/account/password", {"current": PASSWORD, "new": "n" * 12, "repeat": "n" * 12}),
    ("/admin/account/sign-out-everywhere", {}),
    ("/admin/account/sessions/SESSION/end", {}),
    ("/admin/admins", {"name": NAME, "role": "editor", "site": "shop"}),
    ("/admin/admins/roles/GRANT/revoke", {}),
]


def test_every_form_post_is_listed(app):
    rules = {
        rule.rule
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("admin.")
        and "POST" in rule.methods
        and rule.endpoint != "admin.sign_in"
    }
    listed = {
        re.sub(
            r"/shop|/analytics|/PREFIX|/REFERENCE|/ENDPOINT|/DELIVERY|/SESSION|/GRANT",
            lambda m: {
                "/shop": "/<site_key>",
                "/analytics": "/<purpose_key>",
                "/PREFIX": "/<prefix>",
                "/REFERENCE": "/<reference>",
                "/ENDPOINT": "/<int:endpoint_id>",
                "/DELIVERY": "/<int:delivery_id>",
                "/SESSION": "/<int:session_id>",
                "/GRANT": "/<int:grant_id>",
            }[m.group(0)],
            url,
        )
        for url, _ in FORM_POSTS
    }
    assert rules == listed


@pytest.mark.parametrize(("url", "data"), FORM_POSTS)
def test_every_form_refuses_a_post_without_csrf_token(app, admin, site_key, url, data):
    with app.app_context():
        _, secret = issue_key(get_site_by_key(site_key), "k", ["read"])
        db.session.commit()
        prefix = secret.partition(".")[0]
    before = in_app(app, lambda: banner_config(get_site_by_key(site_key)))
    url = url.replace("PREFIX", prefix).replace("ENDPOINT", "1").replace("DELIVERY", "1")
    url = url.replace("SESSION", "1").replace("GRANT", "1")
    response = admin.post(url, data=data)
    assert response.status_code == 400
    assert in_app(app, lambda: banner_config(get_site_by_key(site_key))) == before
    assert admin.get("/admin/").status_code == 200  # still signed in: nothing happened


def test_sign_in_refuses_a_post_without_csrf_token(client, admin_account):
    response = client.post("/admin/sign-in", data={"name": NAME, "password": PASSWORD})
    assert response.status_code == 400
    assert client.get("/admin/").status_code == 302


# --- sites -----------------------------------------------------------------------------

SITE_FORM = {
    "key": "blog",
    "name": "The blog",
    "origins": "https://blog.example\n",
    "languages": "en fr",
    "lifetime_days": "182",
    "retention_days": "400",
}


def test_admin_creates_a_site_with_standard_purposes(app, admin):
    response = post_form(admin, "/admin/sites/new", SITE_FORM)
    assert response.headers["Location"] == "/admin/sites/blog"
    with app.app_context():
        site = get_site_by_key("blog")
        assert site.allowed_origins == ["https://blog.example"]
        assert site.languages == ["en", "fr"]
        assert [p.key for p in site.purposes] == [
            "necessary",
            "preferences",
            "analytics",
            "marketing",
        ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lifetime_days": "396"}, "Number must be between 1 and 395."),
        ({"retention_days": "100"}, "Records must be kept at least as long as a choice stands."),
        ({"origins": "blog.example"}, "is not an origin like https://example.com"),
        ({"languages": "english!"}, "is not a language code"),
        ({"key": "Bad Key"}, "Use 2-64 lower-case letters"),
        ({"texts-0-language": "english", "texts-0-text": "Hi"}, "Use a language code like en"),
        ({"name": ""}, "Give the site a name."),
        ({"logo_url": "javascript:alert(1)"}, "Use a full web address starting with https://"),
        ({"logo_url": "logo.png"}, "Use a full web address starting with https://"),
    ],
)
def test_bad_site_settings_are_refused_with_a_message(app, admin, change, message):
    response = post_form(admin, "/admin/sites/new", {**SITE_FORM, **change})
    assert response.status_code == 422
    assert message in response.text
    assert in_app(app, lambda: get_site_by_key("blog")) is None


def test_a_new_sites_logo_url_is_kept(app, admin):
    logo = "https://blog.example/logo.png"
    post_form(admin, "/admin/sites/new", {**SITE_FORM, "logo_url": logo})
    assert in_app(app, lambda: get_site_by_key("blog").logo_url) == logo


def test_a_taken_site_key_is_refused(admin, site_key):
    response = post_form(admin, "/admin/sites/new", {**SITE_FORM, "key": site_key})
    assert response.status_code == 422
    assert "exists already" in response.text


def test_editing_texts_changes_the_config_hash(app, admin, site_key):
    before = in_app(app, lambda: banner_config(get_site_by_key(site_key))["config_hash"])
    response = post_form(
        admin,
        "/admin/sites/shop/edit",
        {
            "name": "Shop",
            "languages": "en",
            "lifetime_days": "90",
            "retention_days": "90",
            "texts-0-language": "en",
            "texts-0-name": "title",
            "texts-0-text": "Cookies?",
        },
    )
    assert response.status_code == 302
    flashed = admin.get("/admin/sites/shop").text
    assert "What the banner shows changed" in flashed
    with app.app_context():
        config = banner_config(get_site_by_key(site_key))
        assert config["texts"]["en"]["title"] == "Cookies?"
        assert config["lifetime_days"] == 90
        assert config["config_hash"] != before


def test_a_record_after_a_config_edit_still_renders_its_original_banner(admin, site_key):
    config = admin.get("/v1/sites/shop/config").get_json()
    submit(admin, site_key, ACCEPT_ALL, config_hash=config["config_hash"], language="en")
    edited = post_form(
        admin,
        "/admin/sites/shop/edit",
        {
            "name": "Shop",
            "languages": "en",
            "lifetime_days": "182",
            "retention_days": "1095",
            "texts-0-language": "en",
            "texts-0-name": "title",
            "texts-0-text": "Cookies?",
        },
    )
    assert edited.status_code == 302
    log = admin.get("/admin/sites/shop/records").text
    link = re.search(r'href="(/admin/sites/shop/banner-versions/[0-9a-f]{64}[^"]*)"', log)
    assert link, log
    shown = admin.get(link.group(1).replace("&amp;", "&"))
    assert shown.status_code == 200
    assert "Your privacy choices" in shown.text and "Cookies?" not in shown.text
    assert "Lets partners show you ads that match your interests." in shown.text


def test_site_page_shows_embed_snippet_with_sri_of_the_served_widget(admin, site_key):
    page = admin.get("/admin/sites/shop").text
    integrity = re.search(r'integrity=&#34;(sha384-[^&]+)&#34;|integrity="(sha384-[^"]+)"', page)
    assert integrity, page
    served = admin.get("/widget/consent.js", headers={"Accept-Encoding": "identity"}).data
    expected = "sha384-" + base64.b64encode(hashlib.sha384(served).digest()).decode()
    assert (integrity.group(1) or integrity.group(2)) == expected
    assert "data-site=&#34;shop&#34;" in page or 'data-site="shop"' in page


def test_site_page_warns_of_origins_it_refused(admin, site_key):
    assert "does not allow" not in admin.get("/admin/sites/shop").text
    for _ in range(2):
        admin.get("/v1/sites/shop/config", headers={"Origin": "https://staging.example"})
    page = admin.get("/admin/sites/shop").text
    assert "Pages on origins this site does not allow asked for its banner" in page
    assert re.search(r"<code>https://staging.example</code></td><td>2</td>", page)


# --- purposes --------------------------------------------------------------------------

PURPOSE_FORM = {
    "key": "video",
    "kind": "cookie",
    "translations-0-language": "en",
    "translations-0-title": "Video",
    "translations-0-description": "Embedded videos.",
    "consent_mode": ["ad_storage"],
    "cookies-0-name": "VISITOR_INFO1_LIVE",
    "cookies-0-provider": "Google",
    "cookies-0-duration": "6 months",
    "services-0-key": "youtube",
    "services-0-name": "YouTube",
    "services-0-policy_url": "https://policies.google.com/privacy",
}


def test_admin_adds_a_purpose_the_banner_shows(app, admin, site_key):
    response = post_form(admin, "/admin/sites/shop/purposes/new", PURPOSE_FORM)
    assert response.headers["Location"] == "/admin/sites/shop/purposes"
    with app.app_context():
        video = banner_config(get_site_by_key(site_key))["purposes"][-1]
    assert video["key"] == "video"
    assert video["consent_mode"] == ["ad_storage"]
    assert video["translations"] == {"en": {"title": "Video", "description": "Embedded videos."}}
    assert video["cookies"] == [
        {
            "name": "VISITOR_INFO1_LIVE",
            "is_prefix": False,
            "provider": "Google",
            "duration": "6 months",
        }
    ]
    assert video["services"][0]["policy_url"] == "https://policies.google.com/privacy"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"services-0-key": ""}, "Use 1-64 lower-case letters"),
        ({"services-0-policy_url": "javascript:alert(1)"}, "Use a full web address"),
        ({"cookies-0-name": ""}, "Give the cookie&#39;s name"),
        ({"translations-0-title": ""}, "Give a title in this language."),
        ({"translations-0-language": "english"}, "Use a language code like en"),
        ({"translations-1-language": "en", "translations-1-title": "Again"}, "only once"),
        ({"key": "Video!"}, "lower-case letters"),
        ({"key": "stats\n"}, "lower-case letters"),
        ({"key": "analytics"}, "exists already"),
    ],
)
def test_bad_purpose_input_is_refused_with_a_message(app, admin, site_key, change, message):
    response = post_form(admin, "/admin/sites/shop/purposes/new", {**PURPOSE_FORM, **change})
    assert response.status_code == 422
    assert message in response.text
    keys = in_app(app, lambda: [p.key for p in get_site_by_key(site_key).purposes])
    assert "video" not in keys


def test_editing_a_purpose_changes_the_config_hash(app, admin, site_key):
    before = in_app(app, lambda: banner_config(get_site_by_key(site_key))["config_hash"])
    response = post_form(
        admin,
        "/admin/sites/shop/purposes/analytics",
        {
            "kind": "cookie",
            "consent_mode": ["analytics_storage"],
            "translations-0-language": "en",
            "translations-0-title": "Audience",
            "translations-0-description": "Counts.",
        },
    )
    assert response.status_code == 302
    assert "What the banner shows changed" in admin.get("/admin/sites/shop/purposes").text
    after = in_app(app, lambda: banner_config(get_site_by_key(site_key)))
    assert after["config_hash"] != before
    assert after["purposes"][2]["translations"]["en"]["title"] == "Audience"


@pytest.mark.parametrize(
    ("action", "rows"),
    [("add-cookies", 2), ("remove-cookies-0", 0)],
)
def test_row_buttons_change_the_form_and_save_nothing(app, admin, site_key, action, rows):
    before = in_app(app, lambda: banner_config(get_site_by_key(site_key)))
    response = post_form(
        admin, "/admin/sites/shop/purposes/new", {**PURPOSE_FORM, "action": action}
    )
    assert response.status_code == 200
    assert response.text.count('name="cookies-') // 7 == rows  # seven inputs per cookie row
    assert in_app(app, lambda: banner_config(get_site_by_key(site_key))) == before


def test_look_up_fills_a_cookie_row_from_the_open_cookie_database(admin, site_key):
    response = post_form(
        admin,
        "/admin/sites/shop/purposes/new",
        {**PURPOSE_FORM, "cookies-0-name": "_ga", "action": "lookup-cookies-0"},
    )
    assert response.status_code == 200
    assert "found in the Open Cookie Database: category Analytics" in response.text
    assert 'name="cookies-0-provider" type="text" value="Google"' in response.text
    assert 'name="cookies-0-duration" type="text" value="2 years"' in response.text


def test_purposes_are_reordered(app, admin, site_key):
    response = post_form(
        admin,
        "/admin/sites/shop/purposes/marketing/move",
        {"direction": "up"},
        page="/admin/sites/shop/purposes",
    )
    assert response.status_code == 302
    keys = in_app(
        app, lambda: [p["key"] for p in banner_config(get_site_by_key(site_key))["purposes"]]
    )
    assert keys == ["necessary", "preferences", "marketing", "analytics"]


# --- policies --------------------------------------------------------------------------


def test_material_version_reports_the_decisions_it_makes_stale(client, admin, site_key):
    for _ in range(2):
        assert submit(client, site_key, ACCEPT_ALL).status_code == 201
    response = post_form(
        admin,
        "/admin/sites/shop/policies",
        {"version": "v2", "url": "https://shop.example/privacy", "is_material": "y"},
    )
    assert response.status_code == 302
    page = admin.get("/admin/sites/shop/policies").text
    # two visitors, three optional purposes each
    assert "It is a material change: 6 current decisions are now stale" in page
    check = client.get("/v1/sites/shop/config").get_json()
    assert check["material_version"] == "v2"


def test_minor_version_makes_nothing_stale(admin, site_key):
    response = post_form(admin, "/admin/sites/shop/policies", {"version": "v1.1"})
    assert response.status_code == 302
    assert (
        "material change"
        not in admin.get("/admin/sites/shop/policies")
        .text.split("Published policy version")[1]
        .split("</p>")[0]
    )


def test_a_policy_version_can_be_scheduled_ahead(admin, site_key):
    response = post_form(
        admin,
        "/admin/sites/shop/policies",
        {"version": "v3", "published_at": "2999-01-01T00:00", "is_material": "y"},
    )
    assert response.status_code == 302
    page = admin.get("/admin/sites/shop/policies").text
    assert "Scheduled policy version &#39;v3&#39;: it takes effect 2999-01-01 00:00 UTC" in page
    config = admin.get("/v1/sites/shop/config").get_json()
    assert config["policy"]["version"] == "v1"
    assert [p["version"] for p in config["scheduled_policies"]] == ["v3"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"version": "v1"}, "exists already"),
        ({"version": "v3", "published_at": "yesterday"}, "Not a valid datetime value."),
        ({"version": "v3", "url": "not a url"}, "Use a full web address"),
        ({"version": "v3", "url": "javascript:alert(1)"}, "Use a full web address"),
    ],
)
def test_bad_policy_versions_are_refused(admin, site_key, data, message):
    response = post_form(admin, "/admin/sites/shop/policies", data)
    assert response.status_code == 422
    assert message in response.text


# --- API keys --------------------------------------------------------------------------


def test_issued_key_is_shown_once_and_works(app, client, admin, site_key):
    response = post_form(
        admin, "/admin/sites/shop/keys", {"name": "newsletter", "scopes": ["read", "rights"]}
    )
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    secret = re.search(r'value="(ck_[^"]+)"', response.text).group(1)
    check = client.get("/v1/server/check?purpose=analytics&user_id=u1", headers=bearer(secret))
    assert check.status_code == 200
    assert secret not in admin.get("/admin/sites/shop/keys").text
    scopes = in_app(app, lambda: db.session.scalars(select(ApiKey.scopes)).one())
    assert scopes == "read rights"


def test_key_without_scope_is_refused(admin, site_key):
    response = post_form(admin, "/admin/sites/shop/keys", {"name": "nothing"})
    assert response.status_code == 422
    assert "Choose at least one scope." in response.text


def test_revoked_key_is_refused_by_the_api(app, client, admin, site_key, make_key):
    secret = make_key(site_key, "read")
    prefix = secret.partition(".")[0]
    response = post_form(
        admin, f"/admin/sites/shop/keys/{prefix}/revoke", page="/admin/sites/shop/keys"
    )
    assert response.status_code == 302
    assert "revoked" in admin.get("/admin/sites/shop/keys").text
    check = client.get("/v1/server/check?purpose=analytics&user_id=u1", headers=bearer(secret))
    assert check.status_code == 401


def test_another_sites_key_cannot_be_revoked_here(admin, site_key, make_site, make_key):
    prefix = make_key(make_site("other"), "read").partition(".")[0]
    response = post_form(
        admin, f"/admin/sites/shop/keys/{prefix}/revoke", page="/admin/sites/shop/keys"
    )
    assert response.status_code == 404


# --- consent rates ---------------------------------------------------------------------


@pytest.fixture
def some_traffic(client, site_key):
    for _ in range(4):
        client.post(f"/v1/sites/{site_key}/shown")
    submit(client, site_key, ACCEPT_ALL)
    submit(client, site_key, REJECT_ALL)
    submit(client, site_key, [{"purpose": "analytics", "granted": True}])


def test_rates_count_banners_interactions_and_shares(admin, some_traffic):
    page = admin.get("/admin/sites/shop/rates").text
    assert "<svg" in page and "<polyline" in page or "<circle" in page
    today = now_utc().date().isoformat()
    assert f"analytics, {today}: 67% granted (2 of 3)" in page
    rows = list(csv.DictReader(io.StringIO(admin.get("/admin/sites/shop/rates.csv").text)))
    assert len(rows) == 30
    last = rows[-1]
    assert last["period_start"] == today
    assert (last["banners_shown"], last["interactions"], last["interaction_rate"]) == (
        "4",
        "3",
        "0.7500",
    )
    assert (last["analytics_granted"], last["analytics_denied"]) == ("2", "1")
    assert (last["marketing_granted"], last["marketing_denied"]) == ("1", "1")
    assert "necessary_granted" not in last


def test_rates_per_region_and_mode(admin, app_with, runner, site_key):
    invoke_result = runner.invoke(args=["set-regions", site_key, "US-PRIVACY-STATES=opt-out"])
    assert invoke_result.exit_code == 0, invoke_result.output
    behind_proxy = app_with(REGION_HEADER="CF-IPCountry", RATELIMIT_ENABLED=False).test_client()
    submit(behind_proxy, site_key, ACCEPT_ALL, headers={"CF-IPCountry": "FR"})
    submit(behind_proxy, site_key, REJECT_ALL, headers={"CF-IPCountry": "FR"})
    submit(behind_proxy, site_key, ACCEPT_ALL, headers={"CF-IPCountry": "US-TX"})
    page = admin.get("/admin/sites/shop/rates").text
    table = page[page.index('id="regions-heading"') :]
    rows = [
        re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row)).strip()
        for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)[1:]
    ]
    assert rows == [
        "FR opt-in 2 1 / 1 (50%) 1 / 1 (50%) 1 / 1 (50%)",
        "US-TX opt-out 1 1 / 0 (100%) 1 / 0 (100%) 1 / 0 (100%)",
    ]


def test_rates_per_week(admin, some_traffic):
    response = admin.get("/admin/sites/shop/rates.csv?period=week")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert sum(int(row["interactions"]) for row in rows) == 3
    assert response.headers["Content-Disposition"].startswith("attachment;")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("start=2026-02-01&end=2026-01-01", "The end comes before the start."),
        ("start=2020-01-01&end=2026-01-01", "Choose at most 366 days."),
        ("start=nonsense", "Not a valid date value."),
    ],
)
def test_bad_rate_ranges_are_refused(admin, site_key, query, message):
    response = admin.get(f"/admin/sites/shop/rates?{query}")
    assert response.status_code == 422
    assert message in response.text
    assert admin.get(f"/admin/sites/shop/rates.csv?{query}").status_code == 422


# --- record log and verification -------------------------------------------------------


def test_record_log_filters_by_purpose_and_decision(admin, some_traffic):
    page = admin.get("/admin/sites/shop/records?purpose=marketing&decision=denied").text
    assert page.count('class="card record"') == 1
    page = admin.get("/admin/sites/shop/records?purpose=analytics&decision=granted").text
    assert page.count('class="card record"') == 2
    page = admin.get("/admin/sites/shop/records?source=api").text
    assert "No record matches." in page


def test_record_log_filters_by_subject_and_dates(app, client, admin, site_key):
    token = submit(client, site_key, ACCEPT_ALL).get_json()["visitor_token"]
    submit(client, site_key, REJECT_ALL, token=token)
    submit(client, site_key, ACCEPT_ALL)
    subject = in_app(
        app,
        lambda: db.session.scalars(
            select(ConsentRecord.subject_pseudonym).where(ConsentRecord.sequence == 1)
        ).one(),
    )
    page = admin.get(f"/admin/sites/shop/records?subject={subject}").text
    assert page.count('class="card record"') == 2
    today = now_utc().date()
    assert (
        admin.get(f"/admin/sites/shop/records?end={today - timedelta(1)}").text.count(
            'class="card record"'
        )
        == 0
    )


def test_record_log_shows_each_hash_and_pages(app, client, admin, site_key, monkeypatch):
    monkeypatch.setattr("consent.admin.records.PAGE_SIZE", 2)
    for _ in range(5):
        submit(client, site_key, ACCEPT_ALL)
    first = admin.get("/admin/sites/shop/records").text
    assert "#5 · decision" in first and "#4 · decision" in first and "#3" not in first
    hashes = in_app(
        app,
        lambda: db.session.scalars(
            select(ConsentRecord.record_hash).order_by(ConsentRecord.sequence)
        ).all(),
    )
    assert f'<dd><code class="hash">{hashes[4]}</code></dd>' in first
    assert f'<dt>Hash</dt><dd><code class="hash">{hashes[3]}</code>' in first
    assert f'<dt>Hash</dt><dd><code class="hash">{hashes[2]}</code>' not in first
    older = admin.get("/admin/sites/shop/records?before=4").text
    assert "#3 · decision" in older and "#2 · decision" in older
    newer = re.search(r'href="([^"]*after=3[^"]*)"', older).group(1).replace("&amp;", "&")
    assert "#5 · decision" in admin.get(newer).text


def test_verify_now_stores_and_shows_the_result(app, admin, some_traffic):
    assert "Never verified" in admin.get("/admin/sites/shop/records").text
    response = post_form(admin, "/admin/sites/shop/verify", page="/admin/sites/shop/records")
    assert response.status_code == 302
    page = admin.get("/admin/sites/shop/records").text
    assert "Chain intact: 3 records checked." in page
    assert "by admin:ada" in page
    run = in_app(app, lambda: db.session.scalars(select(VerificationRun)).one())
    assert (run.is_intact, run.records_checked, run.first_bad_sequence) == (True, 3, None)


def test_cli_verify_result_shows_in_the_admin(app, runner, admin, some_traffic):
    assert invoke(app, runner, "verify", "shop").exit_code == 0
    page = admin.get("/admin/sites/shop").text
    assert "3 records checked" in page and "by cli" in page


# --- people ----------------------------------------------------------------------------


@pytest.fixture
def ada_subscribed(client, site_key, make_key):
    secret = make_key(site_key, "write")
    client.post(
        "/v1/server/records",
        headers=bearer(secret),
        json={"email": "ada@example.com", "decisions": [{"purpose": "analytics", "granted": True}]},
    )


def access_log(app):
    return in_app(
        app,
        lambda: [
            (entry.actor, entry.action)
            for entry in db.session.scalars(select(AccessLogEntry).order_by(AccessLogEntry.id))
        ],
    )


def look_up(admin, value="ADA@example.com", kind="email"):
    return post_form(admin, "/admin/sites/shop/people", {"kind": kind, "value": value})


def test_lookup_shows_state_and_history_and_is_logged(app, admin, ada_subscribed):
    response = look_up(admin)
    assert response.status_code == 200
    assert "ada@example.com" in response.text
    assert "granted" in response.text and "Current state" in response.text
    assert response.headers["Cache-Control"] == "no-store"
    assert access_log(app) == [("admin:ada", "lookup")]


def test_lookup_of_nobody_says_so_and_is_logged(app, admin, site_key):
    response = look_up(admin, "nobody@example.com")
    assert response.status_code == 200
    assert "No one on this site matches." in response.text
    assert access_log(app) == [("admin:ada", "lookup")]


def test_lookup_by_visitor_id(client, admin, site_key):
    visitor_id = submit(client, site_key, ACCEPT_ALL).get_json()["visitor_id"]
    response = look_up(admin, visitor_id, kind="visitor_id")
    assert visitor_id in response.text


def test_lookup_of_a_malformed_email_is_refused_with_a_message(admin, site_key):
    response = look_up(admin, "not-an-email")
    assert response.status_code == 422
    assert "error" in response.text


def pseudonym_of(app):
    return in_app(app, lambda: db.session.scalars(select(Subject.pseudonym)).one())


@pytest.mark.parametrize("export_format", ["json", "csv"])
def test_export_downloads_the_data_and_is_logged(app, admin, ada_subscribed, export_format):
    response = post_form(
        admin,
        "/admin/sites/shop/people/export",
        {"pseudonym": pseudonym_of(app), "format": export_format, "reason": "ticket 42"},
        page="/admin/sites/shop/people",
    )
    assert response.status_code == 200
    assert "attachment" in response.headers["Content-Disposition"]
    assert "ada@example.com" in response.text
    if export_format == "json":
        assert response.get_json()["history"][0]["decisions"][0]["purpose"] == "analytics"
    assert access_log(app) == [("admin:ada", "export")]


def test_export_without_a_reason_asks_for_one_and_exports_nothing(app, admin, ada_subscribed):
    response = post_form(
        admin,
        "/admin/sites/shop/people/export",
        {"pseudonym": pseudonym_of(app), "format": "json"},
        page="/admin/sites/shop/people",
    )
    assert "attachment" not in response.headers.get("Content-Disposition", "")
    assert "Say why (a ticket number will do)" in response.text
    assert access_log(app) == [("admin:ada", "lookup")]


def test_erasure_asks_for_confirmation_first(app, admin, ada_subscribed, record_count):
    before = record_count()
    data = {"pseudonym": pseudonym_of(app)}
    ask = post_form(
        admin,
        "/admin/sites/shop/people/erase",
        {**data, "step": "ask"},
        page="/admin/sites/shop/people",
    )
    assert ask.status_code == 200 and "Erase permanently" in ask.text
    unticked = post_form(
        admin, "/admin/sites/shop/people/erase", data, page="/admin/sites/shop/people"
    )
    assert unticked.status_code == 422
    assert "Tick the box to confirm the erasure." in unticked.text
    assert record_count() == before
    assert access_log(app) == []


def test_confirmed_erasure_forgets_the_person_and_is_logged(
    app, client, admin, ada_subscribed, record_count, make_key, runner
):
    before = record_count()
    response = post_form(
        admin,
        "/admin/sites/shop/people/erase",
        {"pseudonym": pseudonym_of(app), "confirmed": "y", "reason": "ticket 43"},
        page="/admin/sites/shop/people",
    )
    assert response.status_code == 302
    assert "erased; erasure record" in admin.get("/admin/sites/shop/people").text
    assert record_count() == before + 1
    assert access_log(app) == [("admin:ada", "erase")]
    assert "No one on this site matches." in look_up(admin).text
    check = client.get(
        "/v1/server/check?purpose=analytics&email=ada@example.com",
        headers=bearer(make_key("shop", "read")),
    ).get_json()
    assert check["reason"] == "erased"
    assert invoke(app, runner, "verify", "shop").exit_code == 0


def test_unknown_pseudonym_is_not_found(admin, site_key):
    response = post_form(
        admin,
        "/admin/sites/shop/people/export",
        {"pseudonym": "nobody", "format": "json"},
        page="/admin/sites/shop/people",
    )
    assert response.status_code == 404
    assert "No such person" in response.text


# --- bad addresses and the CLI --------------------------------------------------------


@pytest.mark.parametrize("page", ["/admin/sites/nope", "/admin/sites/shop/purposes/nope"])
def test_unknown_site_or_purpose_is_a_readable_404(admin, site_key, page):
    response = admin.get(page)
    assert response.status_code == 404
    assert "<h1>Not Found</h1>" in response.text


def test_create_admin_asks_for_the_password_twice_and_hides_it(app, runner):
    result = invoke(
        app, runner, "create-admin", "Grace", input="a long passphrase\na long passphrase\n"
    )
    assert result.exit_code == 0, result.output
    assert "Admin 'grace' created." in result.output
    assert "a long passphrase" not in result.output


def test_create_admin_refuses_a_short_password(app, runner):
    result = invoke(app, runner, "create-admin", "grace", "--password", "short")
    assert result.exit_code == 1
    assert "Use at least 12 characters." in result.output


def test_create_admin_refuses_an_existing_name_unless_replacing(app, client, runner, admin_account):
    assert invoke(app, runner, "create-admin", NAME, "--password", "x" * 12).exit_code == 1
    result = invoke(app, runner, "create-admin", NAME, "--password", "y" * 12, "--replace")
    assert result.exit_code == 0
    assert sign_in(client, password="y" * 12).status_code == 302


def test_passwords_are_stored_as_scrypt_hashes(app, admin_account):
    stored = in_app(app, lambda: db.session.scalars(select(AdminUser.password_hash)).one())
    assert stored.startswith("scrypt:") and PASSWORD not in stored


def test_purposes_keep_positions_in_order(app, admin, site_key):
    post_form(
        admin,
        "/admin/sites/shop/purposes/necessary/move",
        {"direction": "down"},
        page="/admin/sites/shop/purposes",
    )
    positions = in_app(
        app, lambda: sorted((p.position, p.key) for p in db.session.scalars(select(Purpose)))
    )
    assert [position for position, _ in positions] == [0, 1, 2, 3]


def test_seed_demo_creates_one_demo_admin_who_can_sign_in(app, runner, client):
    with app.app_context():
        first = runner.invoke(args=["seed-demo"])
        second = runner.invoke(args=["seed-demo"])
    password = re.search(r"as 'demo', password (\S+) ", first.output)
    assert first.exit_code == 0 and password, first.output
    assert "password" not in second.output
    assert sign_in(client, "demo", "wrong password").status_code == 200
    assert sign_in(client, "demo", password.group(1)).status_code == 302


# --- rights requests and the access log ------------------------------------------------


def test_admin_registers_a_request_that_came_by_email(admin, site_key, mailbox):
    response = post_form(
        admin,
        "/admin/sites/shop/rights-requests",
        {"kind": "erasure", "email": "ada@example.com", "message": "Forget me"},
    )
    assert response.status_code == 302
    page = admin.get("/admin/sites/shop/rights-requests").text
    assert "registered; the verification link was emailed" in page
    assert "No request is overdue." in page
    assert "/rights/verify/" in mailbox.bodies_to("ada@example.com")[0]


def test_an_overdue_request_is_flagged(admin, site_key, mailbox, monkeypatch):
    import consent.rights_requests

    long_ago = now_utc() - timedelta(days=45)
    monkeypatch.setattr(consent.rights_requests, "now_utc", lambda: long_ago)
    post_form(
        admin, "/admin/sites/shop/rights-requests", {"kind": "access", "email": "a@example.com"}
    )
    monkeypatch.undo()
    assert "1 overdue" in admin.get("/admin/sites/shop/rights-requests").text


@pytest.fixture
def verified_request(client, site_key, make_key, ada_subscribed):
    """Ada's access request, made through the site's backend (so verified)."""
    response = client.post(
        "/v1/server/rights-requests",
        json={"kind": "access", "email": "ada@example.com"},
        headers=bearer(make_key(site_key, "rights")),
    )
    assert response.status_code == 201
    return response.get_json()["reference"]


def test_viewing_a_request_shows_the_address_and_is_logged(app, admin, verified_request):
    page = admin.get(f"/admin/sites/shop/rights-requests/{verified_request}")
    assert page.status_code == 200
    assert "ada@example.com" in page.text
    assert ("admin:ada", "rights_request_view") in access_log(app)


def test_admin_completes_a_verified_request(app, admin, verified_request, mailbox):
    url = f"/admin/sites/shop/rights-requests/{verified_request}"
    response = post_form(admin, url, {"action": "complete"})
    assert response.status_code == 302
    assert "completed" in admin.get(url).text
    assert "/rights/download/" in mailbox.bodies_to("ada@example.com")[-1]


def test_extending_without_a_reason_says_why_it_is_needed(admin, verified_request):
    url = f"/admin/sites/shop/rights-requests/{verified_request}"
    response = post_form(admin, url, {"action": "extend", "reason": ""})
    assert response.status_code == 422
    assert "Say why: the person is told." in response.text


def test_the_access_log_page_filters_by_action(admin, ada_subscribed):
    look_up(admin)
    page = admin.get("/admin/access-log", query_string={"action": "lookup", "site": "shop"})
    assert page.status_code == 200
    assert "admin:ada" in page.text and "<td>lookup</td>" in page.text
    other = admin.get("/admin/access-log", query_string={"action": "erase"})
    assert "No entry matches." in other.text


def test_the_access_log_downloads_as_csv(admin, ada_subscribed):
    look_up(admin)
    response = admin.get("/admin/access-log.csv", query_string={"actor": "admin:ada"})
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(row["site"], row["actor"], row["action"]) for row in rows] == [
        ("shop", "admin:ada", "lookup")
    ]


def test_the_access_log_refuses_an_impossible_date_range(admin, site_key):
    response = admin.get(
        "/admin/access-log", query_string={"start": "2026-12-02", "end": "2026-12-01"}
    )
    assert response.status_code == 422
    assert "The end comes before the start." in response.text


# --- webhooks -------------------------------------------------------------------------

WEBHOOKS_PAGE = "/admin/sites/shop/webhooks"


@pytest.fixture
def receiver():
    receiver, server = start_receiver()
    yield receiver
    server.shutdown()
    server.server_close()


def add_webhook(admin, url, *events, include_email=False):
    data = {"url": url, "events": list(events)}
    if include_email:
        data["include_email"] = "y"
    return post_form(admin, WEBHOOKS_PAGE, data)


def test_adding_an_endpoint_shows_its_secret_once(app, admin, site_key, receiver):
    response = add_webhook(admin, receiver.url, "consent.recorded", "subject.erased")
    assert response.status_code == 200
    assert "whsec_" in response.text
    again = admin.get(WEBHOOKS_PAGE)
    assert receiver.url in again.text and "whsec_" not in again.text
    with app.app_context():
        endpoint = db.session.scalars(select(WebhookEndpoint)).one()
        assert endpoint.events == ["consent.recorded", "subject.erased"]


@pytest.mark.parametrize(
    ("url", "events", "message"),
    [
        ("ftp://crm.example/hook", ["consent.recorded"], "http:// or https://"),
        ("https://crm.example/hook", [], "Choose at least one event."),
    ],
)
def test_a_bad_endpoint_is_refused_beside_the_field(app, admin, site_key, url, events, message):
    response = add_webhook(admin, url, *events)
    assert response.status_code == 422
    assert message in response.text
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(WebhookEndpoint)) == 0


def test_the_delivery_log_shows_status_and_latency_and_sends_again(
    app, admin, client, site_key, receiver
):
    secret_page = add_webhook(admin, receiver.url, "consent.recorded").text
    receiver.secret = "whsec_" + secret_page.split('value="whsec_', 1)[1].split('"', 1)[0]
    submit(client, site_key, ACCEPT_ALL)
    with app.app_context():
        assert app.test_cli_runner().invoke(args=["dispatch", "--once"]).exit_code == 0
        delivery_id = db.session.scalars(select(WebhookDelivery.id)).one()
    log = admin.get(WEBHOOKS_PAGE).text
    assert "delivered" in log and " ms" in log
    response = post_form(
        admin,
        f"{WEBHOOKS_PAGE}/deliveries/{delivery_id}/again",
        page=WEBHOOKS_PAGE,
        follow_redirects=True,
    )
    assert "queued again" in response.text
    with app.app_context():
        assert app.test_cli_runner().invoke(args=["dispatch", "--once"]).exit_code == 0
    assert len(receiver.delivered) == 2
    assert receiver.delivered[0].message_id == receiver.delivered[1].message_id


def test_a_paused_endpoint_gets_no_new_events(app, admin, client, site_key, receiver):
    add_webhook(admin, receiver.url, "consent.recorded")
    with app.app_context():
        endpoint_id = db.session.scalars(select(WebhookEndpoint.id)).one()
    post_form(admin, f"{WEBHOOKS_PAGE}/{endpoint_id}/active", page=WEBHOOKS_PAGE)
    submit(client, site_key, ACCEPT_ALL)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(WebhookDelivery)) == 0


@pytest.mark.parametrize(
    ("url", "data"),
    [
        ("/admin/sites/new", {**SITE_FORM, "name": "nul\x00inside"}),
        ("/admin/sites/new", {**SITE_FORM, "texts-0-language": "en", "texts-0-text": "a\x00"}),
        ("/admin/sites/shop/purposes/new", {**PURPOSE_FORM, "cookies-0-provider": "a\x00"}),
        ("/admin/sites/shop/policies", {"version": "v\x009"}),
        ("/admin/sites/shop/keys", {"name": "nul\x00", "scopes": "read"}),
    ],
)
def test_text_the_database_cannot_hold_is_refused_beside_its_field(app, admin, site_key, url, data):
    before = in_app(app, lambda: banner_config(get_site_by_key(site_key)))
    response = post_form(admin, url, data)
    assert response.status_code == 422
    assert "Remove the NUL or unpaired surrogate characters." in response.text
    assert in_app(app, lambda: banner_config(get_site_by_key(site_key))) == before
