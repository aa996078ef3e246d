"""The banner in a real browser, against the real app on 127.0.0.1.

Every test starts from a clean profile. Waits are Playwright's own (locators, expect,
wait_for_function): no sleeps.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser

SITE = "demo"
API = f"/v1/sites/{SITE}"
OPTIONAL = ["preferences", "analytics", "marketing"]
GATED_RUNS = ["analytics-inline-1", "analytics-src", "analytics-inline-2"]
DATA_LAYER = (
    "window.dataLayer.map(x => Object.prototype.toString.call(x) === '[object Arguments]'"
    " ? Array.from(x) : x)"
)


def banner(page: Page):
    return page.get_by_role("dialog", name="Your privacy choices")


def preference_centre(page: Page):
    return page.get_by_role("dialog", name="Cookie settings")


def open_demo(page: Page, path: str = "/") -> None:
    page.goto(path)
    page.wait_for_function("() => window.Consent && window.Consent.version")
    page.evaluate("Consent.ready")


def gated_runs(page: Page) -> list[str]:
    return page.locator("#gated-log li").evaluate_all("items => items.map(i => i.dataset.run)")


def wait_until_saved(page: Page, timeout: float = 10_000) -> None:
    page.wait_for_function(
        "() => Consent.state().pending === 0 && Consent.state().visitor_id !== null",
        timeout=timeout,
    )


def my_history(page: Page) -> list[dict]:
    token = page.evaluate("Consent._.readStore().token")
    response = page.request.get(f"{API}/me", headers={"X-Consent-Token": token})
    assert response.status == 200, response.text()
    return response.json()["history"]


def decisions_of(record: dict) -> dict[str, bool]:
    return {d["purpose"]: d["granted"] for d in record["decisions"]}


def cookie_names(page: Page) -> set[str]:
    return {cookie["name"] for cookie in page.context.cookies()}


def is_focused(locator) -> bool:
    return locator.evaluate("el => el.getRootNode().activeElement === el")


def tab_to(page: Page, locator, limit: int = 40) -> None:
    for _ in range(limit):
        page.keyboard.press("Tab")
        if is_focused(locator):
            return
    raise AssertionError(f"Tab never reached {locator}")


def test_first_visit_shows_banner_and_runs_no_gated_tag(page, artifacts):
    requests = []
    page.on("request", lambda request: requests.append(request))
    open_demo(page)

    expect(banner(page)).to_be_visible()
    expect(banner(page).get_by_text("Always on")).to_be_visible()
    page.screenshot(path=artifacts / "banner.png")
    assert gated_runs(page) == []
    assert page.evaluate("Consent.allowed('analytics')") is False
    assert page.evaluate("Consent.allowed('necessary')") is True
    expect(page.locator("iframe[data-consent]")).to_be_hidden()
    # Nothing written and nothing sent but the config and the identifier-free count.
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0
    assert page.context.cookies() == []
    api_calls = [(r.method, r.url.split("/v1/")[-1]) for r in requests if "/v1/" in r.url]
    # The config is asked for in the page's and the browser's languages, nothing else.
    assert api_calls == [
        ("GET", f"sites/{SITE}/config?lang=en%2Cen-US"),
        ("POST", f"sites/{SITE}/shown"),
    ]
    shown = next(r for r in requests if r.url.endswith("/shown"))
    assert "x-consent-token" not in shown.headers and shown.post_data is None


def test_accept_all_runs_gated_tags_and_service_has_the_record(page):
    open_demo(page)
    banner(page).get_by_role("button", name="Accept all").click()

    expect(banner(page)).to_be_hidden()
    expect(page.locator("#gated-log li")).to_have_count(3)
    assert gated_runs(page) == GATED_RUNS  # document order, inline and src alike
    expect(page.frame_locator("iframe[data-consent]").get_by_text("partner offer")).to_be_visible()
    wait_until_saved(page)
    [record] = my_history(page)
    assert record["source"] == "banner"
    assert decisions_of(record) == {"necessary": True, **dict.fromkeys(OPTIONAL, True)}


def test_reject_all_runs_nothing(page):
    open_demo(page)
    banner(page).get_by_role("button", name="Reject all").click()

    expect(banner(page)).to_be_hidden()
    wait_until_saved(page)
    assert gated_runs(page) == []
    assert page.evaluate("Consent.allowed('analytics')") is False
    [record] = my_history(page)
    assert decisions_of(record) == {"necessary": True, **dict.fromkeys(OPTIONAL, False)}
    assert not cookie_names(page) & {"_ad_id"}


def test_customise_then_save_records_the_switches(page, artifacts):
    open_demo(page)
    banner(page).get_by_role("button", name="Customise").click()
    centre = preference_centre(page)
    expect(centre).to_be_visible()
    for summary in centre.get_by_text("Services (1)").all():
        summary.click()
    switches = centre.get_by_role("switch")
    expect(switches).to_have_count(3 + 2)  # three optional purposes, two services
    for index in range(5):
        expect(switches.nth(index)).to_have_attribute("aria-checked", "false")  # nothing pre-ticked
    page.screenshot(path=artifacts / "preference-centre.png")

    centre.get_by_role("switch", name="Analytics").click()
    expect(centre.get_by_role("switch", name="Matomo")).to_have_attribute("aria-checked", "true")
    centre.get_by_role("button", name="Save choices").click()

    expect(centre).to_be_hidden()
    expect(page.locator("#gated-log li")).to_have_count(3)
    wait_until_saved(page)
    [record] = my_history(page)
    assert record["source"] == "preferences"
    assert decisions_of(record) == {
        "necessary": True,
        "preferences": False,
        "analytics": True,
        "marketing": False,
    }
    assert page.evaluate("Consent.allowed('analytics', 'matomo')") is True
    assert page.evaluate("Consent.allowed('marketing', 'adnetwork')") is False


def test_reload_applies_the_stored_choice_without_a_request(page):
    open_demo(page)
    banner(page).get_by_role("button", name="Accept all").click()
    wait_until_saved(page)

    api_calls = []
    page.on("request", lambda r: api_calls.append(r.url) if "/v1/" in r.url else None)
    page.reload()
    page.wait_for_function("() => window.Consent && Consent.state().decided")

    expect(page.locator("#gated-log li")).to_have_count(3)
    expect(banner(page)).to_have_count(0)
    assert api_calls == []


def test_withdrawal_deletes_the_purposes_cookies_and_keeps_them_deleted(page, live_server):
    open_demo(page)
    banner(page).get_by_role("button", name="Accept all").click()
    expect(page.frame_locator("iframe[data-consent]").get_by_text("partner offer")).to_be_visible()
    assert {"_pk_id.1.demo", "_ad_id"} <= cookie_names(page)

    page.get_by_role("banner").get_by_role("link", name="Cookie settings").click()
    preference_centre(page).get_by_role("button", name="Reject all").click()
    page.wait_for_function("() => !Consent.allowed('analytics')")

    assert not cookie_names(page) & {"_pk_id.1.demo", "_ad_id"}
    assert page.evaluate("Consent.allowed('analytics')") is False
    expect(page.locator("consent-placeholder")).to_be_visible()  # the frame is unloaded
    # A tag that sets its cookie again is cleaned up on the next load.
    page.context.add_cookies([{"name": "_pk_ses.1.demo", "value": "1", "url": live_server}])
    page.reload()
    page.wait_for_function("() => window.Consent && Consent.state().decided")
    assert not cookie_names(page) & {"_pk_ses.1.demo", "_pk_id.1.demo", "_ad_id"}


def gpc_page(new_context) -> Page:
    """A page in a browser that sends Global Privacy Control (header and navigator)."""
    context = new_context(extra_http_headers={"Sec-GPC": "1"})
    context.add_init_script(
        "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true})"
    )
    return context.new_page()


def test_gpc_denies_marketing_and_records_the_real_source(new_context):
    page = gpc_page(new_context)
    open_demo(page)

    expect(banner(page).get_by_text("Global Privacy Control")).to_be_visible()
    banner(page).get_by_role("button", name="Accept all").click()
    page.wait_for_function("() => Consent.state().decided")

    assert page.evaluate("Consent.allowed('analytics')") is True
    assert page.evaluate("Consent.allowed('marketing')") is False
    expect(page.locator("consent-placeholder")).to_be_visible()
    wait_until_saved(page)
    [record] = my_history(page)
    assert record["source"] == "banner"  # what the visitor clicked, with the signal beside it
    assert record["gpc"] is True  # the service saw the browser's Sec-GPC header too
    assert decisions_of(record)["marketing"] is False


def test_under_gpc_marketing_is_granted_only_by_its_own_switch(new_context):
    page = gpc_page(new_context)
    open_demo(page)
    banner(page).get_by_role("button", name="Customise").click()
    preference_centre(page).get_by_role("switch", name="Marketing").click()
    preference_centre(page).get_by_role("button", name="Save choices").click()
    wait_until_saved(page)
    [record] = my_history(page)
    assert (record["source"], record["gpc"]) == ("preferences", True)
    assert decisions_of(record)["marketing"] is True
    assert page.evaluate("Consent.allowed('marketing')") is True


def test_consent_mode_default_comes_first_and_update_follows_each_choice(page):
    open_demo(page)
    layer = page.evaluate(DATA_LAYER)
    assert layer[0][:2] == ["consent", "default"]
    assert layer[0][2]["wait_for_update"] == 500
    assert {k: v for k, v in layer[0][2].items() if k != "wait_for_update"} == dict.fromkeys(
        [
            "ad_storage",
            "ad_user_data",
            "ad_personalization",
            "analytics_storage",
            "functionality_storage",
            "personalization_storage",
        ],
        "denied",
    )
    assert len(layer) == 1

    banner(page).get_by_role("button", name="Accept all").click()
    expect(page.locator("#gated-log li")).to_have_count(3)
    layer = page.evaluate(DATA_LAYER)
    update = layer.index(next(x for x in layer if x[:2] == ["consent", "update"]))
    tag = layer.index({"event": "analytics_tag_ran"})
    assert 0 < update < tag
    assert layer[update][2] == {
        "security_storage": "granted",
        "functionality_storage": "granted",
        "personalization_storage": "granted",
        "analytics_storage": "granted",
        "ad_storage": "granted",
        "ad_user_data": "granted",
        "ad_personalization": "granted",
    }

    page.reload()  # a returning visitor: default, then update at once, then the tags
    page.wait_for_function("() => window.Consent && Consent.state().decided")
    expect(page.locator("#gated-log li")).to_have_count(3)
    layer = page.evaluate(DATA_LAYER)
    assert [x[:2] if isinstance(x, list) else x for x in layer[:3]] == [
        ["consent", "default"],
        ["consent", "update"],
        {"event": "analytics_tag_ran"},
    ]
    assert layer[0][2]["ad_storage"] == "denied" and layer[1][2]["ad_storage"] == "granted"

    page.get_by_role("banner").get_by_role("link", name="Cookie settings").click()
    preference_centre(page).get_by_role("button", name="Reject all").click()
    page.wait_for_function("() => !Consent.allowed('analytics')")
    last = page.evaluate(DATA_LAYER)[-1]
    assert last[:2] == ["consent", "update"] and last[2]["analytics_storage"] == "denied"


def test_keyboard_only_use(page, artifacts):
    open_demo(page)
    layer = banner(page)
    expect(layer).to_be_visible()
    page.wait_for_function("() => document.activeElement.localName === 'consent-widget'")
    assert is_focused(layer)  # focus moved into the banner

    tab_to(page, layer.get_by_role("button", name="Customise"))
    page.keyboard.press("Enter")
    centre = preference_centre(page)
    expect(centre).to_be_visible()
    page.wait_for_function("() => document.activeElement.localName === 'consent-widget'")

    analytics = centre.get_by_role("switch", name="Analytics")
    tab_to(page, analytics)
    page.keyboard.press("Space")
    expect(analytics).to_have_attribute("aria-checked", "true")
    assert analytics.evaluate("el => getComputedStyle(el).outlineStyle") == "solid"  # visible
    page.screenshot(path=artifacts / "preference-centre-keyboard-focus.png")
    for _ in range(25):  # focus stays trapped in the modal preference centre
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.localName") == "consent-widget"
    for _ in range(5):
        page.keyboard.press("Shift+Tab")
        assert page.evaluate("document.activeElement.localName") == "consent-widget"

    page.keyboard.press("Escape")  # closes the centre; no choice yet, so the banner is back
    expect(centre).to_be_hidden()
    expect(layer).to_be_visible()
    assert page.evaluate("Consent.state().decided") is False

    tab_to(page, layer.get_by_role("button", name="Customise"))
    page.keyboard.press("Enter")
    tab_to(page, centre.get_by_role("switch", name="Analytics"))
    page.keyboard.press("Space")
    tab_to(page, centre.get_by_role("button", name="Save choices"))
    page.keyboard.press("Enter")
    expect(centre).to_be_hidden()
    assert page.evaluate("Consent.state().purposes") == {
        "necessary": True,
        "preferences": False,
        "analytics": True,
        "marketing": False,
    }

    settings = page.get_by_role("contentinfo").get_by_role("link", name="Cookie settings")
    tab_to(page, settings)
    page.keyboard.press("Enter")
    expect(centre).to_be_visible()
    page.keyboard.press("Escape")
    expect(centre).to_be_hidden()
    assert is_focused(settings)  # focus returned to what opened it


def test_clean_profile_that_scrolls_navigates_and_closes_grants_nothing(page):
    api_calls = []
    page.on("request", lambda r: api_calls.append((r.method, r.url)) if "/v1/" in r.url else None)
    open_demo(page)
    expect(banner(page)).to_be_visible()
    page.mouse.wheel(0, 1500)
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    page.get_by_role("banner").get_by_role("link", name="Shoes").click()
    page.wait_for_url(re.compile(r"page=shoes"))
    page.wait_for_function("() => window.Consent && window.Consent.version")
    expect(banner(page)).to_be_visible()
    banner(page).get_by_role("button", name="Close").click()
    expect(banner(page)).to_have_count(0)
    page.mouse.wheel(0, 800)

    assert page.evaluate("Consent.state().decided") is False
    assert not any(page.evaluate(f"Consent.allowed('{p}')") for p in OPTIONAL)
    assert gated_runs(page) == []
    assert page.context.cookies() == []
    assert page.evaluate("localStorage.length") == 0
    assert not any(x[:2] == ["consent", "update"] for x in page.evaluate(DATA_LAYER))
    assert not any(method == "POST" and "/records" in url for method, url in api_calls)


@pytest.mark.parametrize("width", [1280, 320])
def test_reject_and_accept_buttons_measure_the_same(new_context, width, artifacts):
    page = new_context(viewport={"width": width, "height": 720}).new_page()
    open_demo(page)
    layer = banner(page)
    expect(layer).to_be_visible()
    page.screenshot(path=artifacts / f"banner-{width}px.png")
    names = ("Accept all", "Reject all", "Customise")
    buttons = [layer.get_by_role("button", name=name) for name in names]
    boxes = [b.bounding_box() for b in buttons]
    style = (
        "el => { const s = getComputedStyle(el); return [s.color, s.backgroundColor,"
        " s.fontSize, s.fontWeight, s.borderTopWidth, s.borderTopColor]; }"
    )
    styles = [b.evaluate(style) for b in buttons]
    assert boxes[0]["width"] == pytest.approx(boxes[1]["width"], abs=0.5)
    assert boxes[0]["height"] == pytest.approx(boxes[1]["height"], abs=0.5)
    assert boxes[1]["width"] == pytest.approx(boxes[2]["width"], abs=0.5)
    assert styles[0] == styles[1] == styles[2]
    # Usable at 320 px: the banner fits the viewport, nothing overflows sideways.
    box = layer.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= width
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def test_record_whose_answer_was_lost_is_retried_and_arrives_once(page):
    attempts = []

    def lose_first_answer(route):
        attempts.append(route.request.headers.get("idempotency-key"))
        if len(attempts) == 1:
            route.fetch()  # the service records it...
            route.abort()  # ...but the answer never reaches the browser
        else:
            route.continue_()

    page.route(f"**{API}/records", lose_first_answer)
    open_demo(page)
    banner(page).get_by_role("button", name="Accept all").click()
    expect(page.locator("#gated-log li")).to_have_count(3)  # applied at once
    wait_until_saved(page, timeout=20_000)

    assert len(attempts) >= 2 and len(set(attempts)) == 1  # same Idempotency-Key
    assert len(my_history(page)) == 1


def test_service_down_then_up_keeps_the_choice_and_records_it_once(page):
    is_down = True
    aborted = []

    def outage(route):
        if is_down:
            aborted.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    page.route(f"**{API}/records", outage)
    open_demo(page)
    banner(page).get_by_role("button", name="Accept all").click()
    expect(page.locator("#gated-log li")).to_have_count(3)
    page.wait_for_function("() => Consent.state().pending === 1")

    page.reload()  # the unsent record survives a reload and the choice still applies
    page.wait_for_function("() => window.Consent && Consent.state().decided")
    expect(page.locator("#gated-log li")).to_have_count(3)
    assert page.evaluate("Consent.state().pending") == 1
    assert aborted

    is_down = False
    wait_until_saved(page, timeout=20_000)
    history = my_history(page)
    assert len(history) == 1 and history[0]["source"] == "banner"


def test_unreachable_service_on_a_first_visit_shows_nothing_and_runs_nothing(page):
    # Without its configuration the banner cannot say what it asks for, nor know that
    # this page may use the site: nothing optional runs until the service answers.
    page.route(f"**{API}/**", lambda route: route.abort())
    open_demo(page)
    expect(page.locator("consent-widget")).to_have_count(0)
    assert gated_runs(page) == []
    assert page.evaluate("Consent.allowed('analytics')") is False
    assert page.evaluate("localStorage.length") == 0


def test_a_second_tab_sees_the_new_choice(new_context):
    context = new_context()
    first, second = context.new_page(), context.new_page()
    open_demo(first)
    open_demo(second)
    expect(banner(second)).to_be_visible()

    banner(first).get_by_role("button", name="Accept all").click()

    second.wait_for_function("() => Consent.allowed('analytics')")
    expect(second.locator("#gated-log li")).to_have_count(3)
    expect(banner(second)).to_have_count(0)


def test_click_to_load_placeholder_names_its_purpose_and_loads_the_frame(page):
    open_demo(page)
    placeholder = page.locator("consent-placeholder")
    expect(placeholder).to_contain_text("Ad Network")
    expect(placeholder).to_contain_text("Marketing")
    placeholder.get_by_role("button").click()

    expect(page.frame_locator("iframe[data-consent]").get_by_text("partner offer")).to_be_visible()
    assert page.evaluate("Consent.allowed('marketing', 'adnetwork')") is True
    assert page.evaluate("Consent.allowed('analytics')") is False


def test_texts_follow_the_page_language(page):
    open_demo(page, "/?lang=fr")
    layer = page.get_by_role("dialog", name="Vos choix de confidentialité")
    expect(layer).to_be_visible()
    expect(layer.get_by_role("button", name="Tout refuser")).to_be_visible()


def test_material_policy_change_asks_again(page):
    open_demo(page)
    banner(page).get_by_role("button", name="Accept all").click()
    wait_until_saved(page)
    # As if the stored choice predated the latest material policy and the last check.
    page.evaluate(
        """() => {
          const key = Consent._.storeKey, stored = JSON.parse(localStorage.getItem(key));
          stored.choice.material = 'an-older-version';
          stored.checked = 0;
          localStorage.setItem(key, JSON.stringify(stored));
        }"""
    )
    page.reload()
    expect(banner(page)).to_be_visible()
    assert page.evaluate("Consent.allowed('analytics')") is False


def test_js_api_events_and_stub(page):
    open_demo(page)
    # demo.js registered through the stub before consent.js loaded; its log shows it ran.
    expect(page.locator("#event-log")).to_contain_text("ready: no choice yet")
    page.evaluate(
        """() => {
          window.seen = [];
          Consent.onChange(s => seen.push('callback:' + s.purposes.analytics));
          const on = (name, f) =>
            document.addEventListener('consent:' + name, e => seen.push(f(e)));
          on('change', e => 'change:' + e.detail.purposes.analytics);
          on('saved', e => 'saved:' + e.detail.record.source);
        }"""
    )
    page.get_by_role("button", name="Allow analytics only (Consent.set)").click()
    page.wait_for_function("() => seen.length === 3")
    # Page code choosing for the visitor is the site's own settings UI, purpose by purpose.
    assert page.evaluate("seen") == ["callback:true", "change:true", "saved:preferences"]
    assert page.evaluate("Consent.allowed('marketing')") is False
    page.get_by_role("button", name="Open settings (Consent.open)").click()
    expect(preference_centre(page)).to_be_visible()


def test_only_one_global_is_added(page):
    page.goto("/demo/embed")  # same origin, no widget: the browser's own globals
    baseline = set(page.evaluate("Object.keys(window)"))
    open_demo(page)
    added = {k for k in page.evaluate("Object.keys(window)") if not k.isdigit()} - baseline
    assert added == {"Consent", "dataLayer"}  # dataLayer: Google's name, made only if absent


def test_a_second_embed_does_not_start_it_twice(page):
    open_demo(page)
    page.evaluate(
        """() => new Promise(resolve => {
          window.Consent.marker = 1;
          const again = document.createElement('script');
          again.src = '/widget/consent.js';
          again.dataset.site = 'demo';
          again.nonce = document.querySelector('script[data-site]').nonce;
          again.onload = resolve;
          document.head.append(again);
        })"""
    )
    assert page.evaluate("window.Consent.marker") == 1
    expect(page.locator("consent-widget")).to_have_count(1)


def test_styles_are_isolated_and_themeable(page):
    open_demo(page)
    accept = banner(page).get_by_role("button", name="Accept all")
    expect(accept).to_be_visible()
    # The shop's `button { text-transform: uppercase }` does not reach in; its
    # --consent-accent custom property does.
    assert accept.evaluate("el => getComputedStyle(el).textTransform") == "none"
    assert accept.evaluate("el => getComputedStyle(el).backgroundColor") == "rgb(15, 81, 50)"
    # And the widget's styles do not leak out.
    shop_button = page.get_by_role("button", name="Open settings (Consent.open)")
    assert shop_button.evaluate("el => getComputedStyle(el).textTransform") == "uppercase"


def test_embedded_on_another_origin(page, other_shop):
    open_demo(page, f"{other_shop}/")
    banner(page).get_by_role("button", name="Accept all").click()
    expect(page.locator("body")).to_have_attribute("data-ran", "yes")
    wait_until_saved(page)  # CORS preflight with the token and idempotency headers
    assert page.evaluate("Object.keys(localStorage)") == ["consent:demo"]  # first-party


def test_bundle_shows_the_banner_after_one_request(page):
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    open_demo(page, "/?bundle=1")

    expect(banner(page)).to_be_visible()
    widget_requests = [url for url in requests if "/widget/" in url or "/v1/" in url]
    assert widget_requests[0].endswith("/widget/consent.js?site=demo")
    assert not any(url.endswith(("/config", "/widget/consent.css")) for url in requests)
