"""The API reference page renders every operation in a real browser, under the strict CSP."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


def test_api_reference_shows_the_operations_without_csp_violations(new_context, live_server):
    page = new_context().new_page()
    problems = []
    page.on("console", lambda message: message.type == "error" and problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    requested = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto("/v1/docs")
    page.locator(".opblock-summary-path").first.wait_for()
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert any("/v1/sites/{site_key}/check" in path for path in paths)
    assert any("/v1/server/records" in path for path in paths)
    assert problems == []
    assert all(url.startswith(live_server) for url in requested), requested
