"""Admin sessions end on the server: sign-out, a new password, timeouts, everywhere.

Also the sign-in lockout per (name, address) and the ``next=`` fallback.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from helpers import csrf_token
from sqlalchemy import func, select, update

from consent.admin.auth import set_admin_password
from consent.admin.models import AdminSession
from consent.admin.roles import grant_role
from consent.db import db, now_utc

NAME, PASSWORD = "ada", "correct horse battery staple"
STRANGER = {"REMOTE_ADDR": "203.0.113.9"}


@pytest.fixture(autouse=True)
def _push_request_context():
    """Each request gets its own app context, as in production (see tests/test_admin.py)."""


@pytest.fixture
def admin_account(app):
    with app.app_context():
        grant_role(set_admin_password(NAME, PASSWORD), "owner")
        db.session.commit()


def sign_in(client, password=PASSWORD, **kwargs):
    token = csrf_token(client, "/admin/sign-in")
    return client.post(
        "/admin/sign-in",
        data={"csrf_token": token, "name": NAME, "password": password},
        **kwargs,
    )


def signed_in_client(app):
    client = app.test_client()
    assert sign_in(client).status_code == 302
    return client


def copy_of(app, client):
    """Another browser holding a copy of the client's session cookie."""
    thief = app.test_client()
    thief.set_cookie("session", client.get_cookie("session").value)
    return thief


def press(client, url: str, page: str = "/admin/account", **data):
    return client.post(url, data={"csrf_token": csrf_token(client, page), **data})


def is_signed_in(client) -> bool:
    return client.get("/admin/").status_code == 200


def test_a_copied_cookie_works_until_sign_out(app, admin_account):
    browser = signed_in_client(app)
    thief = copy_of(app, browser)
    assert is_signed_in(thief)
    assert press(browser, "/admin/sign-out", page="/admin/").status_code == 302
    assert not is_signed_in(thief)


def test_a_new_password_from_the_cli_ends_every_session(app, runner, admin_account):
    browser = signed_in_client(app)
    thief = copy_of(app, browser)
    with app.app_context():
        result = runner.invoke(
            args=["create-admin", NAME, "--password", "another long passphrase", "--replace"]
        )
    assert result.exit_code == 0, result.output
    assert not is_signed_in(browser)
    assert not is_signed_in(thief)


def test_changing_the_password_ends_the_other_sessions_only(app, admin_account):
    browser, other = signed_in_client(app), signed_in_client(app)
    new = "a brand new passphrase"
    response = press(browser, "/admin/account/password", current=PASSWORD, new=new, repeat=new)
    assert response.status_code == 302
    assert is_signed_in(browser)
    assert not is_signed_in(other)


def test_a_wrong_current_password_changes_nothing(app, admin_account):
    browser = signed_in_client(app)
    response = press(
        browser, "/admin/account/password", current="not it at all", new="n" * 12, repeat="n" * 12
    )
    assert response.status_code == 422
    assert "This is not your current password." in response.text
    assert sign_in(app.test_client()).status_code == 302


def test_sign_out_everywhere_ends_every_session(app, admin_account):
    browser, other = signed_in_client(app), signed_in_client(app)
    assert press(browser, "/admin/account/sign-out-everywhere").status_code == 302
    assert not is_signed_in(browser)
    assert not is_signed_in(other)


def test_one_other_session_can_be_ended_from_the_account_page(app, admin_account):
    browser, other = signed_in_client(app), signed_in_client(app)
    page = browser.get("/admin/account").text
    ended = re.search(r"/admin/account/sessions/(\d+)/end", page).group(0)
    assert press(browser, ended).status_code == 302
    assert is_signed_in(browser)
    assert not is_signed_in(other)


def test_account_page_lists_the_active_sessions(app, admin_account):
    browser = signed_in_client(app)
    signed_in_client(app)
    page = browser.get("/admin/account")
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"
    assert page.text.count('<th scope="row">') == 2
    assert "this browser" in page.text
    assert "Sign out this session" in page.text


@pytest.mark.parametrize(
    ("column", "age"),
    [("last_seen_at", timedelta(minutes=31)), ("created_at", timedelta(hours=12, minutes=1))],
    ids=["idle", "absolute"],
)
def test_a_session_past_its_timeout_ends(app, admin_account, column, age):
    browser = signed_in_client(app)
    with app.app_context():
        db.session.execute(update(AdminSession).values({column: now_utc() - age}))
        db.session.commit()
    response = browser.get("/admin/")
    assert response.status_code == 302
    assert "/admin/sign-in" in response.headers["Location"]
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(AdminSession)) == 0


def test_a_session_in_use_stays_open_past_the_idle_time(app, admin_account):
    browser = signed_in_client(app)
    with app.app_context():
        db.session.execute(
            update(AdminSession).values(
                created_at=now_utc() - timedelta(hours=2),
                last_seen_at=now_utc() - timedelta(minutes=29),
            )
        )
        db.session.commit()
    assert is_signed_in(browser)


def test_the_cookie_holds_no_admin_id_only_a_token(app, admin_account):
    browser = signed_in_client(app)
    with app.app_context():
        stored = db.session.scalars(select(AdminSession.token_hash)).one()
    # The token itself is never stored: the row holds its SHA-256.
    assert len(stored) == 64
    assert stored not in browser.get_cookie("session").value


# --- lockout per name and address -------------------------------------------------------


def test_a_stranger_cannot_lock_a_real_admin_out(app, admin_account):
    stranger = app.test_client()
    for _ in range(5):
        sign_in(stranger, password="guessing wrong", environ_base=STRANGER)
    assert sign_in(stranger, environ_base=STRANGER).status_code == 429
    assert sign_in(app.test_client()).status_code == 302


@pytest.mark.parametrize(
    "target",
    [
        "/admin/\r\nSet-Cookie: x=y",
        "/admin/sites\n",
        "//evil.example/admin/",
        "/\\evil.example",
        "https://evil.example/admin/",
        "javascript:alert(1)",
        "/admin/\x00",
        "/elsewhere",
        "",
    ],
)
def test_an_odd_next_falls_back_to_the_dashboard(client, admin_account, target):
    token = csrf_token(client, "/admin/sign-in")
    response = client.post(
        "/admin/sign-in",
        query_string={"next": target},
        data={"csrf_token": token, "name": NAME, "password": PASSWORD},
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/"


def test_a_plain_next_inside_the_admin_is_followed(client, admin_account):
    token = csrf_token(client, "/admin/sign-in")
    response = client.post(
        "/admin/sign-in",
        query_string={"next": "/admin/account"},
        data={"csrf_token": token, "name": NAME, "password": PASSWORD},
    )
    assert response.headers["Location"] == "/admin/account"
