"""consent.d.ts, served beside the widget, declares what window.Consent really has."""

from __future__ import annotations

import re
import urllib.request

import pytest

pytestmark = pytest.mark.browser


def declared_members(source: str, interface: str) -> set[str]:
    """The member names of one interface in the declarations."""
    body = re.search(rf"interface {interface} \{{(.*?)\n\}}", source, re.S).group(1)
    return set(re.findall(r"^\s+(?:readonly )?(\w+)[?(:]", body, re.M))


@pytest.fixture(scope="module")
def declarations(live_server) -> str:
    with urllib.request.urlopen(f"{live_server}/widget/consent.d.ts", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("application/typescript")
        return response.read().decode()


def test_the_api_declared_is_the_api_the_widget_has(page, declarations):
    page.goto("/")
    page.wait_for_function("window.Consent && window.Consent.version")
    members = set(page.evaluate("Object.keys(window.Consent)")) - {"_"}
    assert members == declared_members(declarations, "ConsentApi")


def test_the_state_declared_is_the_state_the_widget_gives(page, declarations):
    page.goto("/")
    state = page.evaluate("window.Consent.ready.then(() => window.Consent.state())")
    assert set(state) == declared_members(declarations, "ConsentState")


def test_both_events_are_declared(declarations):
    assert '"consent:change": CustomEvent<ConsentState>' in declarations
    assert '"consent:saved": CustomEvent<ConsentSavedDetail>' in declarations
