"""``consent scan`` refuses what it must not visit before any browser starts.

The scans themselves run in a real browser: tests/browser/test_scan.py (whose sites are
all on this machine, so the guard of the server's own network is shown here, on the plan
a scan of a public site gets).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import func, select

from consent.db import db
from consent.models import Scan
from consent.scan.store import plan_scan
from consent.sites import get_site_by_key


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["https://elsewhere.example/"], "urls: 'https://elsewhere.example/' is not on an allowed"),
        (["file:///etc/passwd"], "urls: 'file:///etc/passwd' is not an http(s) URL."),
        (["javascript:alert(1)"], "urls: 'javascript:alert(1)' is not an http(s) URL."),
        (["https://shop.example:8443/"], "urls: 'https://shop.example:8443/' is not on an"),
        (["https://shop.example/", "--pages", "0"], "pages: Scan 1 to 200 pages."),
        (["https://shop.example/", "--time-limit", "5"], "time_limit: The time limit is 10 to"),
        (["https://shop.example/", "--page-timeout", "0"], "page_timeout: A page may take 1 to"),
        (["https://shop.example/", "--allow-host", "a b"], "allow_host: 'a b' is not a host"),
    ],
)
def test_scan_refuses_with_one_line(runner, app, make_site, arguments, message):
    make_site("shop", origins=["https://shop.example"])
    result = runner.invoke(args=["scan", "shop", *arguments])
    assert (result.exit_code, result.output.count("\n")) == (1, 1), result.output
    assert result.output.startswith(f"Error: {message}")
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Scan)) == 0


def test_scan_refuses_an_unknown_site(runner):
    result = runner.invoke(args=["scan", "nowhere", "https://shop.example/"])
    assert (result.exit_code, result.output) == (1, "Error: No site with key 'nowhere'.\n")


def test_scan_without_playwright_says_how_to_install_it(tmp_path):
    code = (
        "import sys; sys.modules['playwright'] = None; sys.argv = ['consent', 'scan', 'x', 'y']\n"
        "from consent.__main__ import main; main()"
    )
    environment = {
        **os.environ,
        "CONSENT_DATABASE_URL": f"sqlite:///{tmp_path / 'c.sqlite'}",
        "CONSENT_SECRET_KEY": "s" * 32,
        "CONSENT_DATA_KEY": "a" * 43 + "=",
    }
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=60
    )
    assert (done.returncode, done.stderr) == (
        1,
        "Error: The scanner needs Playwright: pip install 'consent[scan]'.\n",
    )


@pytest.mark.parametrize(
    ("host", "is_allowed"),
    [
        ("cdn.example.net", True),
        ("127.0.0.1", False),
        ("localhost", False),
        ("10.0.0.7", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("[::1]", False),
        ("::1", False),
    ],
)
def test_a_public_site_may_not_reach_the_servers_network(app, make_site, host, is_allowed):
    make_site("shop", origins=["https://shop.example"])
    with app.app_context():
        plan = plan_scan(get_site_by_key("shop"), ["https://shop.example/"])
    assert plan.may_request(host) is is_allowed
