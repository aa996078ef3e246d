"""Real-browser fixtures: the app on 127.0.0.1 in a thread, Chromium from the system.

The app is built from the factory on a temporary SQLite file migrated the way
``consent init-db`` does it, with the demo site seeded for the live server's origin.
Each test gets a fresh browser context: a clean profile with no storage and no cookies.
"""

from __future__ import annotations

import base64
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from flask_migrate import upgrade
from werkzeug.serving import make_server

from consent import create_app
from consent.db import db
from consent.demo import seed_demo_site
from consent.scan.browser import CHROMIUM, CHROMIUM_ARGS

ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture(scope="session")
def live_app(tmp_path_factory):
    """The app, migrated and seeded, before it serves anything."""
    folder = tmp_path_factory.mktemp("browser")
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{folder / 'consent.sqlite'}",
            "SECRET_KEY": "browser-test-secret",
            "DATA_KEY": base64.b64encode(b"b" * 32).decode(),
            # One app serves every test from one address: keep its limits out of reach.
            "RATELIMIT_RECORD": "100000/minute",
            "RATELIMIT_CHECK": "100000/minute",
            # Where a visitor is, as Cloudflare tells it (country, and the subdivision
            # with its "visitor location headers" on).
            "REGION_HEADER": "CF-IPCountry",
            "SUBREGION_HEADER": "CF-Region-Code",
        }
    )
    app.instance_path = str(folder / "instance")
    with app.app_context():
        upgrade()
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture(scope="session")
def live_server(live_app):
    """Serve the app on a free port of 127.0.0.1 in a background thread; yield its origin."""
    server = make_server("127.0.0.1", 0, live_app, threaded=True)
    origin = f"http://127.0.0.1:{server.server_port}"
    with live_app.app_context():
        seed_demo_site(origins=[origin])
        db.session.commit()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield origin
    server.shutdown()
    thread.join()


@pytest.fixture(scope="session")
def other_shop(live_app, live_server):
    """Another site on its own origin (a loopback server too: Chromium refuses public pages
    reaching loopback) whose page embeds the widget from the live server."""
    page = (
        '<!doctype html><html lang="en"><body><h1>Another shop</h1>'
        f'<script src="{live_server}/widget/consent.js" data-site="demo" defer></script>'
        '<script type="text/plain" data-consent="analytics">'
        "document.body.dataset.ran = 'yes'</script></body></html>"
    ).encode()

    class Shop(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Shop)
    origin = f"http://localhost:{server.server_port}"
    with live_app.app_context():
        seed_demo_site(origins=[origin])
        db.session.commit()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield origin
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="session")
def browser():
    """The system Chromium, headless, driven by Playwright (never a downloaded build)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def new_context(browser, live_server):
    """Make fresh browser contexts (clean profiles) for one test; all closed after it."""
    contexts = []

    def make(**options):
        context = browser.new_context(base_url=live_server, **options)
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_context):
    """A page in a fresh context; an uncaught page error fails the test."""
    page = new_context().new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(error))
    yield page
    assert not errors, f"errors reached the page: {errors}"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """The folder for screenshots (gitignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
