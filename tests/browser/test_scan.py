"""The cookie scanner, run as a site owner runs it (``consent scan`` in its own process).

A shop served from the test embeds the banner from the live app. Its pages plant exactly
one of each finding: an analytics cookie from an ungated script, a third-party frame
before any choice, an undeclared cookie only after "Accept all", a cookie that outlives
its declared duration and a declared cookie no page sets; one page is clean. Another
server stands in for a hostile site: a page that hangs, one that redirects forever, one
whose script never yields, one that opens dialogs and one that leaves for another site.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import select

from consent.db import db
from consent.models import Scan
from consent.scan.browser import CHROMIUM
from consent.sites import STANDARD_PURPOSES, create_site, get_site_by_key, set_purpose

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}"),
]

#: What the shop declares: one row per planted inventory problem, and a necessary cookie.
INVENTORY = {
    "necessary": [{"name": "shop_session", "duration": "session", "description": "Sign-in."}],
    "preferences": [{"name": "shop_lang", "duration": "30 days", "description": "Language."}],
    "analytics": [{"name": "old_tracker", "duration": "1 year", "description": "Gone."}],
    "marketing": [],
}


def _page(banner: str, body: str) -> bytes:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Shop</title>'
        f"{banner}</head><body>{body}</body></html>"
    ).encode()


def _serve(handler) -> tuple[ThreadingHTTPServer, threading.Thread]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def _stop(server, thread) -> None:
    server.shutdown()
    server.server_close()
    thread.join()


class _Pages(BaseHTTPRequestHandler):
    pages: dict[str, tuple[bytes, list[tuple[str, str]]]] = {}

    def do_GET(self):
        if self.path not in self.pages:
            self.send_error(404)
            return
        body, headers = self.pages[self.path]
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def third_party():
    """A host of someone else (localhost, where the shop is 127.0.0.1) serving a frame."""
    handler = type("Ads", (_Pages,), {"pages": {"/ad": (_page("", "<p>An ad</p>"), [])}})
    server, thread = _serve(handler)
    yield f"http://localhost:{server.server_port}"
    _stop(server, thread)


@pytest.fixture(scope="module")
def shop(live_app, live_server, third_party):
    """The shop's origin: five pages, the banner of site 'shop' on each."""
    banner = f'<script src="{live_server}/widget/consent.js" data-site="shop" defer></script>'
    paths = ("/ungated", "/frame", "/after-accept", "/clean")
    links = "".join(f'<a href="{path}">{path}</a> ' for path in paths)
    pages = {
        "/": (_page(banner, links), [("Set-Cookie", "shop_session=s1; Path=/; HttpOnly")]),
        "/ungated": (
            _page(
                banner,
                "<script>document.cookie = '_ga=GA1.1.42.1700000000; path=/; "
                "max-age=63072000';</script>",
            ),
            [],
        ),
        "/frame": (_page(banner, f'<iframe src="{third_party}/ad"></iframe>'), []),
        "/after-accept": (
            _page(
                banner,
                '<script type="text/plain" data-consent="analytics">'
                "document.cookie = '_pk_id.1.a1b2=visitor; path=/; max-age=34128000';</script>"
                '<script type="text/plain" data-consent="preferences">'
                "document.cookie = 'shop_lang=en; path=/; max-age=31536000';</script>",
            ),
            [],
        ),
        "/clean": (_page(banner, "<p>Nothing to see.</p>"), []),
    }
    server, thread = _serve(type("Shop", (_Pages,), {"pages": pages}))
    origin = f"http://127.0.0.1:{server.server_port}"
    with live_app.app_context():
        site = create_site("shop", "Shop", origins=[origin])
        for position, purpose in enumerate(STANDARD_PURPOSES):
            cookies = [
                {"is_prefix": False, "provider": "Shop", **row} for row in INVENTORY[purpose["key"]]
            ]
            fields = {k: v for k, v in purpose.items() if k != "key"}
            set_purpose(site, purpose["key"], position=position, cookies=cookies, **fields)
        db.session.commit()
    yield origin
    _stop(server, thread)


@pytest.fixture(scope="module")
def scan(live_app):
    """Run ``consent scan`` in its own process against the live app's database."""

    def run(*args: str) -> subprocess.CompletedProcess:
        environment = {
            **os.environ,
            "CONSENT_DATABASE_URL": live_app.config["DATABASE_URL"],
            "CONSENT_SECRET_KEY": live_app.config["SECRET_KEY"],
            "CONSENT_DATA_KEY": live_app.config["DATA_KEY"],
        }
        return subprocess.run(
            [sys.executable, "-m", "consent", "scan", *args],
            capture_output=True,
            text=True,
            env=environment,
            timeout=300,
        )

    return run


@pytest.fixture(scope="module")
def shop_scan(shop, scan, tmp_path_factory):
    """One scan of the shop from its home page: the process, and the JSON report."""
    report = tmp_path_factory.mktemp("scan") / "report.json"
    done = scan("shop", f"{shop}/", "--json", str(report))
    return done, json.loads(report.read_text())


def _identities(report) -> set[tuple]:
    return {(f["level"], f["kind"], f["subject"], f["pass_name"]) for f in report["findings"]}


def _finding(report, level, subject):
    return next(f for f in report["findings"] if f["level"] == level and f["subject"] == subject)


def test_scan_finds_exactly_the_planted_findings(shop_scan):
    _, report = shop_scan
    assert _identities(report) == {
        ("violation", "cookie", "_ga", "before"),
        ("violation", "cookie", "_ga", "reject"),
        ("violation", "request", "localhost", "before"),
        ("violation", "request", "localhost", "reject"),
        ("undeclared", "cookie", "_ga", "before"),
        ("undeclared", "cookie", "_pk_id.1.a1b2", "accept"),
        ("lifetime", "cookie", "shop_lang", "accept"),
        ("stale", "cookie", "old_tracker", None),
    }


def test_scan_visits_every_linked_page(shop_scan, shop):
    _, report = shop_scan
    paths = ["/", "/ungated", "/frame", "/after-accept", "/clean"]
    assert report["pages"] == [f"{shop}{path}" for path in paths]


@pytest.mark.parametrize(
    ("name", "platform"), [("_ga", "Google Analytics"), ("_pk_id.1.a1b2", "Piwik")]
)
def test_scan_classifies_undeclared_cookies_from_the_cookie_database(shop_scan, name, platform):
    finding = _finding(shop_scan[1], "undeclared", name)
    assert (finding["purpose"], finding["source"], finding["suggestion"]["provider"]) == (
        "analytics",
        "database",
        platform,
    )


def test_scan_suggests_the_database_wildcard_for_a_prefixed_cookie(shop_scan):
    suggestion = _finding(shop_scan[1], "undeclared", "_pk_id.1.a1b2")["suggestion"]
    assert (suggestion["name"], suggestion["is_prefix"], suggestion["duration"]) == (
        "_pk_id.",
        True,
        "13 months",
    )


def test_scan_names_the_page_and_script_of_a_violation(shop_scan, shop):
    finding = _finding(shop_scan[1], "violation", "_ga")
    assert (finding["page"], finding["evidence"]["cookie"]["set_by"]) == (
        f"{shop}/ungated",
        f"{shop}/ungated",
    )


def test_scan_never_reports_the_banner_key_or_a_declared_necessary_cookie(shop_scan):
    _, report = shop_scan
    seen = {c["name"] for c in report["observed"]["cookies"]}
    seen |= {s["key"] for s in report["observed"]["storage"]}
    reported = {f["subject"] for f in report["findings"]}
    assert {"shop_session", "consent:shop"} <= seen
    assert not reported & {"shop_session", "consent:shop"}


def test_scan_exits_1_on_a_violation(shop_scan):
    done, _ = shop_scan
    assert done.returncode == 1, done.stderr


def test_scan_prints_the_findings_as_a_table(shop_scan):
    done, _ = shop_scan
    lines = done.stdout.splitlines()
    assert any(line.split()[:3] == ["violation", "cookie", "_ga"] for line in lines if line)
    assert lines[-1] == "Findings: 4 violation, 2 undeclared, 1 lifetime, 1 stale."


def test_scan_is_stored_with_its_findings(shop_scan, live_app):
    _, report = shop_scan
    with live_app.app_context():
        # The shop's first scan: the one shop_scan ran before any test of this module.
        site_id = get_site_by_key("shop").id
        stored = db.session.scalars(
            select(Scan).where(Scan.site_id == site_id).order_by(Scan.id)
        ).first()
        assert (stored.status, stored.site.key, stored.findings) == (
            "done",
            "shop",
            report["findings"],
        )


@pytest.mark.parametrize(("level", "status"), [("violation", 0), ("stale", 1)])
def test_scan_exit_status_follows_fail_on(shop, scan, level, status):
    # Alone, the clean page leaves the declared cookies of the other pages stale.
    done = scan("shop", f"{shop}/clean", "--pages", "1", "--fail-on", level)
    assert (done.returncode, done.stdout.splitlines()[-1]) == (status, "Findings: 3 stale.")


def test_demo_site_scans_clean(live_server, scan):
    done = scan("demo", f"{live_server}/")
    assert (done.returncode, done.stdout.splitlines()[-1]) == (0, "No findings."), done.stdout


# --- a site that fights back -----------------------------------------------------------


class _Hostile(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/hang":
            time.sleep(8)  # longer than the page timeout of the scan
            body = b"late"
        elif self.path.startswith("/loop"):
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.end_headers()
            return
        elif self.path == "/redirect-away":
            self.send_response(302)
            self.send_header("Location", f"{self.elsewhere}/ad")
            self.end_headers()
            return
        elif self.path == "/away":
            body = f"<script>location.href = '{self.elsewhere}/ad'</script>".encode()
        elif self.path == "/busy":
            body = b"<script>setTimeout(() => { for (;;) {} }, 300)</script><p>Busy</p>"
        elif self.path == "/dialog":
            body = b"<script>alert('hello'); confirm('sure?')</script><p>Dialogs</p>"
        else:
            body = b"".join(
                f'<a href="{path}">{path}</a>'.encode()
                for path in ("/hang", "/loop", "/busy", "/dialog", "/away", "/redirect-away")
            )
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass  # the browser gave up first

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def hostile_scan(live_app, scan, third_party):
    server, thread = _serve(type("Hostile", (_Hostile,), {"elsewhere": third_party}))
    origin = f"http://127.0.0.1:{server.server_port}"
    with live_app.app_context():
        create_site("hostile", "Hostile", origins=[origin])
        db.session.commit()
    started = time.monotonic()
    done = scan("hostile", f"{origin}/", "--page-timeout", "2", "--json", "-")
    elapsed = time.monotonic() - started
    yield done, elapsed
    _stop(server, thread)


def _problems(hostile_scan) -> dict[str, list[str]]:
    done, _ = hostile_scan
    problems: dict[str, list[str]] = {}
    for problem in json.loads(done.stdout)["problems"]:
        path = "/" + problem["page"].split("/", 3)[-1]
        problems.setdefault(path, []).append(problem["message"])
    return problems


def test_scan_of_a_hostile_site_ends_with_its_report(hostile_scan):
    done, _ = hostile_scan
    assert (done.stderr, json.loads(done.stdout)["site"]) == ("", "hostile")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/hang", "did not finish loading in 2 s"),
        # Twenty redirects: Chromium gives up, unless the page timeout comes first.
        ("/loop", ("could not be loaded: ", "did not finish loading in 2 s")),
        ("/busy", "stopped responding (a script keeps it busy)"),
        ("/dialog", "opened a dialog (alert): dismissed"),
        ("/away", "left the site for http://localhost:"),
        ("/redirect-away", "redirected off the site to http://localhost:"),
    ],
)
def test_scan_reports_each_bounded_page(hostile_scan, path, expected):
    problems = _problems(hostile_scan)
    assert any(message.startswith(expected) for message in problems.get(path, [])), problems


def test_scan_of_a_hostile_site_stays_within_its_page_timeouts(hostile_scan):
    _, elapsed = hostile_scan
    assert elapsed < 60
