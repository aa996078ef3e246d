"""How the scanner and the browser tests start Chromium: Debian's build, headless."""

from __future__ import annotations

import os

#: Debian's Chromium; never a browser build downloaded by Playwright.
CHROMIUM = os.environ.get("CONSENT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
