"""The banner keeps the promise in the browser: policy changes, refused origins, languages,
the one-tag bundle, the settings button, themes and layouts.

Each test makes its own site and serves a small shop page for it from the test (Playwright
answers the page's URL), so what one test publishes never reaches another.
"""

from __future__ import annotations

import re
import threading
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import Page, expect

from consent.db import db, now_utc
from consent.i18n import BANNER_TEXTS, purpose_translations
from consent.sites import (
    STANDARD_PURPOSES,
    create_site,
    get_site_by_key,
    publish_policy,
    set_purpose,
)

pytestmark = pytest.mark.browser

ANALYTICS_COOKIE = [{"name": "_ga", "is_prefix": True, "provider": "Google", "duration": "2 years"}]


@pytest.fixture
def make_shop(live_app):
    """Create a site with the standard purposes (analytics declares `_ga*`); its key."""

    def make(*, origins=(), appearance=None, languages=None, texts=None) -> str:
        key = f"shop-{uuid.uuid4().hex[:8]}"
        with live_app.app_context():
            site = create_site(key, "Test shop", origins=list(origins), languages=languages)
            site.appearance = appearance or {}
            site.texts = texts or {}
            for position, purpose in enumerate(STANDARD_PURPOSES):
                fields = {k: v for k, v in purpose.items() if k != "key"}
                if purpose["key"] == "analytics":
                    fields["cookies"] = ANALYTICS_COOKIE
                set_purpose(site, purpose["key"], position=position, **fields)
            publish_policy(site, "v1", url="https://shop.example/privacy", is_material=True)
            db.session.commit()
        return key

    return make


@pytest.fixture(scope="module")
def elsewhere():
    """Pages on another loopback origin (Chromium lets only such pages reach loopback):
    ``elsewhere.pages[path] = html``; yields the server's origin."""
    pages: dict[str, bytes] = {}

    class Pages(BaseHTTPRequestHandler):
        def do_GET(self):
            body = pages.get(self.path, b"")
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    server.pages = pages
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def publish(live_app, site_key: str, version: str, *, at=None) -> None:
    with live_app.app_context():
        publish_policy(get_site_by_key(site_key), version, is_material=True, published_at=at)
        db.session.commit()


def shop_html(script_src: str, site_key: str | None, lang: str = "en") -> str:
    data_site = f' data-site="{site_key}"' if site_key else ""
    return (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        f'<script src="{script_src}"{data_site} defer></script></head>'
        "<body><h1>Shop</h1><p>Corner content</p>"
        '<script type="text/plain" data-consent="analytics">'
        "document.cookie = '_ga=GA1.1.42; path=/; max-age=99999';"
        "document.body.dataset.analytics = 'ran'</script>"
        '<script type="text/plain" data-consent="marketing">'
        "document.body.dataset.marketing = 'ran'</script></body></html>"
    )


def open_shop(
    page: Page,
    origin: str,
    site_key: str,
    *,
    lang: str = "en",
    bundle: bool = False,
    elsewhere=None,
) -> None:
    """Open a shop page that embeds the widget: on the service's origin or ``elsewhere``."""
    src = f"{origin}/widget/consent.js" + (f"?site={site_key}" if bundle else "")
    html = shop_html(src, None if bundle else site_key, lang)
    path = f"/shop-{site_key}"
    if elsewhere is not None:
        elsewhere.pages[path] = html.encode()
        url = f"http://localhost:{elsewhere.server_port}{path}"
    else:
        url = f"{origin}{path}"
        page.route(url, lambda route: route.fulfill(body=html, content_type="text/html"))
    page.goto(url)
    page.wait_for_function("() => window.Consent && window.Consent.version")
    page.evaluate("Consent.ready")


def banner(page: Page):
    return page.locator("consent-widget").get_by_role("dialog").first


def gated(page: Page) -> dict[str, str]:
    return page.evaluate("({...document.body.dataset})")


def cookie_names(page: Page) -> set[str]:
    return {cookie["name"] for cookie in page.context.cookies()}


def accept_all(page: Page) -> None:
    banner(page).get_by_role("button", name="Accept all").click()
    page.wait_for_function("() => Consent.state().pending === 0 && Consent.state().visitor_id")


def test_material_policy_reaches_a_returning_visitor_within_the_config_max_age(
    page, live_app, live_server, make_shop, monkeypatch
):
    monkeypatch.setitem(live_app.config, "CONFIG_MAX_AGE", 1)
    site = make_shop()
    open_shop(page, live_server, site)
    accept_all(page)
    assert gated(page) == {"analytics": "ran", "marketing": "ran"}
    assert "_ga" in cookie_names(page)

    publish(live_app, site, "v2")
    page.wait_for_function("() => Date.now() - Consent._.readStore().checked > 1100")
    for _ in range(2):  # the next load asks again, and so does every later one
        page.reload()
        page.wait_for_function("() => window.Consent && window.Consent.version")
        page.evaluate("Consent.ready")
        expect(banner(page)).to_be_visible()
        assert gated(page) == {}
        assert "_ga" not in cookie_names(page)
        assert page.evaluate("Consent.allowed('analytics')") is False


def test_within_the_max_age_a_stored_choice_applies_with_no_request(page, live_server, make_shop):
    site = make_shop()
    open_shop(page, live_server, site)
    accept_all(page)
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    page.reload()
    page.wait_for_function("() => document.body.dataset.analytics === 'ran'")
    assert not [url for url in requests if "/v1/" in url]


def test_a_scheduled_policy_switches_at_its_time_in_the_browser_and_the_check(
    page, live_app, live_server, make_shop
):
    site = make_shop()
    effective_at = now_utc() + timedelta(seconds=8)
    publish(live_app, site, "v2", at=effective_at)
    open_shop(page, live_server, site)
    accept_all(page)
    # (An expression that ends in a function is called by Playwright: hence the `; 0`.)
    page.evaluate(
        "window.switched = null; Consent.onChange(s => window.switched ??= Date.now()); 0"
    )
    token = page.evaluate("Consent._.readStore().token")

    def server_allows() -> bool:
        answer = page.request.get(
            f"{live_server}/v1/sites/{site}/check?purpose=analytics",
            headers={"X-Consent-Token": token},
        )
        return answer.json()["allowed"]

    assert page.evaluate("Consent.allowed('analytics')") is True
    assert server_allows() is True
    requests = []
    page.on("request", lambda request: requests.append(request.url))

    expect(banner(page)).to_be_visible(timeout=15_000)  # asked again, at the time
    switched_at = page.evaluate("window.switched") / 1000
    assert abs(switched_at - effective_at.timestamp()) < 1.0
    assert page.evaluate("Consent.allowed('analytics')") is False
    assert server_allows() is False
    assert not [url for url in requests if url.endswith("/config")]  # no request needed
    assert "_ga" not in cookie_names(page)


@pytest.mark.parametrize("bundle", [False, True], ids=["plain", "bundle"])
def test_a_refused_origin_shows_nothing_runs_nothing_and_names_the_fix(
    page, live_server, make_shop, elsewhere, bundle
):
    site = make_shop(origins=["https://shop.example"])
    foreign = f"http://localhost:{elsewhere.server_port}"
    errors = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    open_shop(page, live_server, site, bundle=bundle, elsewhere=elsewhere)

    expect(page.locator("consent-widget")).to_have_count(0)
    assert gated(page) == {}
    assert page.evaluate("localStorage.length") == 0
    assert page.evaluate("Consent.state().refused") is True
    assert any(
        f"add {foreign} to the allowed origins of site {site}" in error for error in errors
    ), errors
    page.evaluate("Consent.open()")
    expect(page.locator("consent-widget")).to_have_count(0)


@pytest.mark.parametrize("language", ["fr", "de", "pl"])
def test_a_page_in_another_language_shows_no_english(page, live_server, make_shop, language):
    site = make_shop()
    open_shop(page, live_server, site, lang=language)
    layer = banner(page)
    expect(layer).to_be_visible()
    expect(layer).to_have_attribute("lang", language)
    texts = BANNER_TEXTS[language]
    expect(layer.get_by_role("heading")).to_have_text(texts["title"])
    layer.get_by_role("button", name=texts["customise"]).click()
    centre = page.locator("consent-widget").get_by_role("dialog", name=texts["settings_title"])
    expect(centre).to_be_visible()
    for switch in centre.locator("details").all():
        switch.locator("summary").click()
    shown = banner(page).inner_text() + centre.inner_text()
    english, foreign = dict(BANNER_TEXTS["en"]), dict(texts)
    for purpose in ("necessary", "preferences", "analytics", "marketing"):
        for field in ("title", "description"):
            english[purpose, field] = purpose_translations(purpose)["en"][field]
            foreign[purpose, field] = purpose_translations(purpose)[language][field]
    leftovers = [
        text
        for key, text in english.items()
        if text != foreign[key]
        and "{" not in text
        and re.search(rf"(?<!\w){re.escape(text)}(?!\w)", shown)
    ]
    assert leftovers == []


def test_right_to_left_language_reads_from_the_right(page, live_server, make_shop):
    arabic = {"title": "خيارات الخصوصية", "accept_all": "قبول الكل", "reject_all": "رفض الكل"}
    site = make_shop(languages=["ar", "en"], texts={"ar": arabic})
    open_shop(page, live_server, site, lang="ar")
    layer = banner(page)
    expect(layer).to_have_attribute("dir", "rtl")
    expect(layer.get_by_role("heading")).to_have_text(arabic["title"])
    close = layer.get_by_role("button", name="Close").bounding_box()
    box = layer.bounding_box()
    assert close["x"] < box["x"] + box["width"] / 2  # the close button sits on the left
    accept = layer.get_by_role("button", name=arabic["accept_all"]).bounding_box()
    reject = layer.get_by_role("button", name=arabic["reject_all"]).bounding_box()
    assert accept["x"] > reject["x"]  # the first button is the rightmost


def test_the_site_parameter_alone_is_enough(page, live_server, make_shop):
    site = make_shop()
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    open_shop(page, live_server, site, bundle=True)
    expect(banner(page)).to_be_visible()
    assert not [url for url in requests if url.endswith("/config")]
    accept_all(page)
    assert gated(page) == {"analytics": "ran", "marketing": "ran"}


def test_a_bundle_on_a_page_in_another_language_asks_for_that_one(
    new_context, live_server, make_shop
):
    page = new_context(locale="en-US").new_page()  # the bundle comes in English
    site = make_shop()
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    open_shop(page, live_server, site, lang="fi", bundle=True)
    expect(banner(page).get_by_role("heading")).to_have_text(BANNER_TEXTS["fi"]["title"])
    assert [url for url in requests if "/config" in url] == [
        f"{live_server}/v1/sites/{site}/config?lang=fi%2Cen-US"
    ]


def test_the_floating_button_reopens_the_preference_centre(page, live_server, make_shop):
    site = make_shop()
    open_shop(page, live_server, site)
    settings = page.locator("consent-settings").get_by_role("button", name="Cookie settings")
    expect(settings).to_have_count(0)  # nothing to reopen before a choice
    accept_all(page)
    expect(settings).to_be_visible()
    box = settings.bounding_box()
    assert box["x"] < 100 and box["y"] > page.viewport_size["height"] - 100  # bottom left
    settings.click()
    expect(
        page.locator("consent-widget").get_by_role("dialog", name="Cookie settings")
    ).to_be_visible()
    expect(settings).to_have_count(0)  # hidden while the centre is open


def test_the_floating_button_can_be_turned_off(page, live_server, make_shop):
    site = make_shop(appearance={"settings_button": False})
    open_shop(page, live_server, site)
    accept_all(page)
    expect(page.locator("consent-settings")).to_have_count(0)


@pytest.mark.parametrize(
    ("scheme", "theme", "is_dark"),
    [
        ("dark", "auto", True),
        ("light", "auto", False),
        ("light", "dark", True),
        ("dark", "light", False),
    ],
)
def test_dark_mode_follows_the_system_or_the_site(
    new_context, live_server, make_shop, scheme, theme, is_dark
):
    page = new_context(color_scheme=scheme).new_page()
    site = make_shop(appearance={"theme": theme})
    open_shop(page, live_server, site)
    background = banner(page).evaluate("el => getComputedStyle(el).backgroundColor")
    red = int(background.removeprefix("rgb(").split(",")[0])
    assert (red < 100) is is_dark, background


@pytest.mark.parametrize("layout", ["box", "bar", "modal"])
@pytest.mark.parametrize("language", ["en", "de"])
def test_on_a_phone_the_first_layer_covers_at_most_40_percent(
    new_context, live_server, make_shop, artifacts, layout, language
):
    page = new_context(viewport={"width": 360, "height": 740}).new_page()
    site = make_shop(appearance={"layout": layout})
    open_shop(page, live_server, site, lang=language)
    layer = banner(page)
    expect(layer).to_be_visible()
    page.screenshot(path=artifacts / f"phone-{layout}-{language}.png")
    box = layer.bounding_box()
    assert box["width"] * box["height"] <= 0.4 * 360 * 740
    assert box["x"] >= 0 and box["x"] + box["width"] <= 360


@pytest.mark.parametrize("layout", ["bar", "modal"])
def test_layouts_place_the_first_layer(new_context, live_server, make_shop, layout):
    page = new_context(viewport={"width": 1280, "height": 800}).new_page()
    site = make_shop(appearance={"layout": layout})
    open_shop(page, live_server, site)
    box = banner(page).bounding_box()
    if layout == "bar":
        assert box["width"] == 1280 and box["y"] + box["height"] == pytest.approx(800, abs=1)
    else:
        middle = box["y"] + box["height"] / 2
        assert middle == pytest.approx(400, abs=2) and box["width"] <= 560
