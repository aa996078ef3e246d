"""Roles per site: every admin route, walked by every role, opens or answers 403.

The expected table is written out here, not read from the views, so a route that
checks the wrong role fails. A new admin route fails ``test_every_route_is_in_the_matrix``
until it is added below.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import uuid

import psycopg
import pytest
from sqlalchemy import select

from consent import create_app
from consent.admin.auth import set_admin_password
from consent.admin.models import AdminRole
from consent.admin.roles import ROLES, grant_role
from consent.db import db
from consent.sites import STANDARD_PURPOSES, create_site, get_site_by_key, set_purpose

PASSWORD = "correct horse battery staple"
ALL = set(ROLES)
NOBODY: set[str] = set()
SETUP = {"owner", "editor", "auditor"}
RECORDS = {"owner", "analyst", "auditor"}

#: (method, path) -> the roles that may use it, each held on the site "shop" only.
#: Creating a site needs a role on every site, so no single-site role may.
MATRIX = {
    ("GET", "/admin/"): ALL,
    ("GET", "/admin/account"): ALL,
    ("POST", "/admin/account/password"): ALL,
    ("POST", "/admin/account/sign-out-everywhere"): ALL,
    ("POST", "/admin/account/sessions/<int:session_id>/end"): ALL,
    ("POST", "/admin/sign-out"): ALL,
    ("GET", "/admin/admins"): {"owner"},
    ("POST", "/admin/admins"): {"owner"},
    ("POST", "/admin/admins/roles/<int:grant_id>/revoke"): {"owner"},
    ("GET", "/admin/sites/new"): NOBODY,
    ("POST", "/admin/sites/new"): NOBODY,
    ("GET", "/admin/sites/<site_key>"): ALL,
    ("GET", "/admin/sites/<site_key>/edit"): {"owner", "editor"},
    ("POST", "/admin/sites/<site_key>/edit"): {"owner", "editor"},
    ("GET", "/admin/sites/<site_key>/purposes"): SETUP,
    ("GET", "/admin/sites/<site_key>/purposes/new"): {"owner", "editor"},
    ("POST", "/admin/sites/<site_key>/purposes/new"): {"owner", "editor"},
    ("GET", "/admin/sites/<site_key>/purposes/<purpose_key>"): {"owner", "editor"},
    ("POST", "/admin/sites/<site_key>/purposes/<purpose_key>"): {"owner", "editor"},
    ("POST", "/admin/sites/<site_key>/purposes/<purpose_key>/move"): {"owner", "editor"},
    ("GET", "/admin/sites/<site_key>/policies"): SETUP,
    ("POST", "/admin/sites/<site_key>/policies"): {"owner", "editor"},
    ("GET", "/admin/sites/<site_key>/keys"): SETUP,
    ("POST", "/admin/sites/<site_key>/keys"): {"owner", "editor"},
    ("POST", "/admin/sites/<site_key>/keys/<prefix>/revoke"): {"owner", "editor"},
    ("GET", "/admin/sites/<site_key>/rates"): RECORDS,
    ("GET", "/admin/sites/<site_key>/rates.csv"): RECORDS,
    ("GET", "/admin/sites/<site_key>/records"): RECORDS,
    ("POST", "/admin/sites/<site_key>/verify"): RECORDS | {"editor"},
    ("GET", "/admin/sites/<site_key>/people"): {"owner", "rights", "auditor"},
    ("POST", "/admin/sites/<site_key>/people"): {"owner", "rights", "auditor"},
    ("POST", "/admin/sites/<site_key>/people/export"): {"owner", "rights"},
    ("POST", "/admin/sites/<site_key>/people/erase"): {"owner", "rights"},
    ("GET", "/admin/sites/<site_key>/banner-versions/<config_hash>"): RECORDS,
    ("GET", "/admin/sites/<site_key>/rights-requests"): {"owner", "rights", "auditor"},
    ("POST", "/admin/sites/<site_key>/rights-requests"): {"owner", "rights"},
    ("GET", "/admin/sites/<site_key>/rights-requests/<reference>"): {"owner", "rights", "auditor"},
    ("POST", "/admin/sites/<site_key>/rights-requests/<reference>"): {"owner", "rights"},
    # The access log spans every site: it needs the auditor's role on every site.
    ("GET", "/admin/access-log"): NOBODY,
    ("GET", "/admin/access-log.csv"): NOBODY,
    ("GET", "/admin/sites/<site_key>/scans"): SETUP,
    ("POST", "/admin/sites/<site_key>/scans"): {"owner", "editor"},
    ("GET", "/admin/sites/<site_key>/scans/<int:scan_id>"): SETUP,
    ("GET", "/admin/sites/<site_key>/scans/<int:scan_id>/inventory/<purpose_key>"): {
        "owner",
        "editor",
    },
    ("GET", "/admin/sites/<site_key>/webhooks"): SETUP,
    ("POST", "/admin/sites/<site_key>/webhooks"): {"owner", "editor"},
    ("POST", "/admin/sites/<site_key>/webhooks/<int:endpoint_id>/active"): {"owner", "editor"},
    ("POST", "/admin/sites/<site_key>/webhooks/deliveries/<int:delivery_id>/again"): {
        "owner",
        "editor",
    },
}
SAMPLE_VALUES = {
    "<site_key>": "shop",
    "<purpose_key>": "analytics",
    "<prefix>": "ck_000000000000",
    "<int:session_id>": "999999",
    "<int:grant_id>": "999999",
    "<config_hash>": "0" * 64,
    "<reference>": "nope",
    "<int:scan_id>": "999999",
    "<int:endpoint_id>": "999999",
    "<int:delivery_id>": "999999",
}
POSTGRES_ADMIN_URL = os.environ.get(
    "CONSENT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SECRETS = {"SECRET_KEY": "roles", "DATA_KEY": base64.b64encode(b"r" * 32).decode()}
CASES = [(role, method, path) for (method, path) in sorted(MATRIX) for role in sorted(ROLES)]


@pytest.fixture(autouse=True)
def _push_request_context():
    """Each request gets its own app context, as in production (see tests/test_admin.py)."""


def admin_routes(app) -> set[tuple[str, str]]:
    return {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("admin.") and rule.endpoint not in ("admin.sign_in",)
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }


def test_every_route_is_in_the_matrix(app):
    assert admin_routes(app) == set(MATRIX)


def test_every_admin_view_declares_its_roles(app):
    views = {
        rule.endpoint
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("admin.") and rule.endpoint != "admin.sign_in"
    }
    undeclared = [e for e in views if not hasattr(app.view_functions[e], "required_roles")]
    assert not undeclared


def sign_in(app, name: str):
    client = app.test_client()
    page = client.get("/admin/sign-in").text
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    response = client.post(
        "/admin/sign-in", data={"csrf_token": token, "name": name, "password": PASSWORD}
    )
    assert response.status_code == 302
    return client


def signed_in_as(app, make_site, role: str, *, on: str | None = "shop"):
    make_site("shop")
    make_site("other")
    with app.app_context():
        site = get_site_by_key(on) if on else None
        grant_role(set_admin_password(f"{role}-admin", PASSWORD), role, site)
        db.session.commit()
    return sign_in(app, f"{role}-admin")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def matrix_clients(request, tmp_path_factory):
    """One app per database for the whole matrix, with one signed-in client per role.

    Shared by every case, which is safe because no case changes anything: POSTs carry
    no CSRF token (refused 400 when the role allows them), GETs only read.
    """
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("roles") / "consent.sqlite"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        url, name = f"sqlite:///{path}", None
    else:
        name = f"consent_roles_{uuid.uuid4().hex[:12]}"
        template = request.getfixturevalue("postgres_template")
        postgres_admin(f"CREATE DATABASE {name} TEMPLATE {template}")
        url = f"{POSTGRES_ADMIN_URL.rpartition('/')[0]}/{name}"
    app = create_app({"TESTING": True, "DATABASE_URL": url, **SECRETS})
    with app.app_context():
        for key in ("shop", "other"):
            site = create_site(key, key.title())
            for position, purpose in enumerate(STANDARD_PURPOSES):
                set_purpose(site, position=position, **purpose)
        shop = get_site_by_key("shop")
        for role in ROLES:
            grant_role(set_admin_password(f"{role}-admin", PASSWORD), role, shop)
        db.session.commit()
    yield {role: sign_in(app, f"{role}-admin") for role in ROLES}
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    if name:
        postgres_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def postgres_admin(statement: str) -> None:
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(statement)


def call(client, method: str, path: str):
    for placeholder, value in SAMPLE_VALUES.items():
        path = path.replace(placeholder, value)
    # No CSRF token: a request the role allows is then refused 400, never 403.
    return client.open(path, method=method, data={})


@pytest.mark.parametrize(("role", "method", "path"), CASES)
def test_each_role_opens_only_its_routes(matrix_clients, role, method, path):
    response = call(matrix_clients[role], method, path)
    if role in MATRIX[(method, path)]:
        assert response.status_code != 403, response.text
        assert response.status_code < 500
    else:
        assert response.status_code == 403


@pytest.mark.parametrize("role", sorted(ROLES))
def test_a_role_on_one_site_opens_nothing_on_another(app, make_site, role):
    client = signed_in_as(app, make_site, role)
    assert client.get("/admin/sites/other").status_code == 403


@pytest.mark.parametrize("role", sorted(ROLES))
def test_the_dashboard_lists_only_the_sites_of_the_role(app, make_site, role):
    client = signed_in_as(app, make_site, role)
    page = client.get("/admin/").text
    assert "/admin/sites/shop" in page
    assert "/admin/sites/other" not in page


def test_an_editor_of_every_site_may_create_a_site(app, make_site):
    client = signed_in_as(app, make_site, "editor", on=None)
    assert client.get("/admin/sites/new").status_code == 200


def test_an_owner_grants_a_role_on_their_site(app, make_site):
    client = signed_in_as(app, make_site, "owner")
    with app.app_context():
        set_admin_password("newcomer", PASSWORD)
        db.session.commit()
    page = client.get("/admin/admins").text
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    response = client.post(
        "/admin/admins",
        data={"csrf_token": token, "name": "newcomer", "role": "analyst", "site": "shop"},
    )
    assert response.status_code == 302
    with app.app_context():
        grants = db.session.execute(select(AdminRole.role, AdminRole.site_id)).all()
        shop = get_site_by_key("shop").id
    assert ("analyst", shop) in grants


def test_a_site_owner_cannot_grant_roles_on_every_site(app, make_site):
    client = signed_in_as(app, make_site, "owner")
    page = client.get("/admin/admins").text
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    response = client.post(
        "/admin/admins",
        data={"csrf_token": token, "name": "owner-admin", "role": "owner", "site": ""},
    )
    assert response.status_code == 422
    assert "Not a valid choice" in response.text


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--role", "analyst", "--site", "shop"], "'grace' is analyst on shop."),
        (["--role", "auditor"], "'grace' is auditor on every site."),
        ([], "'grace' is owner on every site."),
    ],
)
def test_create_admin_grants_a_role(app, runner, make_site, args, expected):
    make_site("shop")
    with app.app_context():
        result = runner.invoke(
            args=["create-admin", "grace", "--password", "a long passphrase", *args]
        )
    assert result.exit_code == 0, result.output
    assert expected in result.output


def test_create_admin_refuses_an_unknown_role_in_one_line(app, runner):
    with app.app_context():
        result = runner.invoke(
            args=["create-admin", "grace", "--password", "a long passphrase", "--role", "god"]
        )
    assert result.exit_code == 2
    assert "'god' is not one of" in result.output


@pytest.mark.parametrize(
    ("path", "button"),
    [
        ("/admin/sites/shop/keys", ">Issue key</button>"),
        ("/admin/sites/shop/policies", ">Publish</button>"),
        ("/admin/sites/shop/purposes", "Move analytics up"),
    ],
)
@pytest.mark.parametrize(("role", "is_shown"), [("editor", True), ("auditor", False)])
def test_read_only_roles_see_no_buttons_that_change(matrix_clients, path, button, role, is_shown):
    page = matrix_clients[role].get(path)
    assert page.status_code == 200
    assert (button in page.text) is is_shown
