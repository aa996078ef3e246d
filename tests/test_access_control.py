"""Access control on the server API: every route, every wrong key, every other site.

The routes are read from the app's URL map, so a new server route is walked too (and
this file fails until the route has a sample request below). With its sample request,
each route must refuse a missing, malformed, wrong or revoked key (401, JSON, with
``WWW-Authenticate``) and a key without its scope (403), and take a key with only that
scope. Another site's valid key must never read or change this site's people: it gets
a refusal or nothing, and this site's rows stay as they were.
"""

from __future__ import annotations

import base64
import re

import pytest
from helpers import PERSON_EMAIL, PERSON_USER_ID, bearer, make_person
from sqlalchemy import func, select

from consent import create_app
from consent.db import db
from consent.models import (
    API_SCOPES,
    AccessLogEntry,
    ConsentRecord,
    CurrentState,
    Site,
    Subject,
    Visitor,
)
from consent.sites import get_site_by_key, set_purpose

DECISION = [{"purpose": "email_marketing", "granted": True}]

#: Per endpoint: the scope it needs, and a valid request about the person ``who``
#: names (``{"email": ...}``, ``{"user_id": ...}`` or ``{"visitor_token": ...}``);
#: ``token`` is the person's visitor token, for the routes that take one anyway.
SAMPLES = {
    "server.ServerCheck": (
        "read",
        lambda who, token: {"query_string": {"purpose": "email_marketing", **who}},
    ),
    "server.ServerRecords": ("write", lambda who, token: {"json": {**who, "decisions": DECISION}}),
    "server.Links": (
        "write",
        lambda who, token: {"json": {"visitor_token": token, "user_id": "linked-1"}},
    ),
    "server.BulkCheck": (
        "read",
        lambda who, token: {
            "json": {"purpose": "email_marketing", "emails": [who.get("email", PERSON_EMAIL)]}
        },
    ),
    "server.Suppression": (
        "read",
        lambda who, token: {"query_string": {"purpose": "email_marketing"}},
    ),
    "server.UnsubscribeLinks": (
        "write",
        lambda who, token: {
            "json": {"purpose": "email_marketing", "emails": [who.get("email", PERSON_EMAIL)]}
        },
    ),
    "server.SubjectExport": ("rights", lambda who, token: {"query_string": who}),
    "server.SubjectCorrection": (
        "rights",
        lambda who, token: {"json": {**who, "field": "email", "value": "new@example.com"}},
    ),
    "server.SubjectErasure": ("rights", lambda who, token: {"json": who}),
    "server.ServerRightsRequests": (
        "rights",
        lambda who, token: {"json": {**who, "kind": "access"}},
    ),
    "server.BannerVersions": (
        "read",
        lambda who, token: {"path": f"/v1/server/banner-versions/{SERVED_BANNER['hash']}"},
    ),
}
#: The demo site's banner as served to the person (set by the ``person`` fixture).
SERVED_BANNER: dict[str, str] = {}


def bare_app():
    """An app that is only looked at (routes, OpenAPI document), never given a database."""
    return create_app(
        {
            "TESTING": True,
            "DATABASE_URL": "sqlite://",
            "SECRET_KEY": "routes",
            "DATA_KEY": base64.b64encode(b"r" * 32).decode(),
        }
    )


def server_routes() -> list[tuple[str, str, str]]:
    """(endpoint, method, path) of every server API route in the URL map."""
    app = bare_app()
    return sorted(
        (rule.endpoint, method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("server.")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    )


ROUTES = server_routes()
ROUTE_IDS = [f"{method} {path}" for _, method, path in ROUTES]


def test_every_server_route_has_a_sample_request():
    assert ROUTES, "no server routes found in the URL map"
    missing = {endpoint for endpoint, _, _ in ROUTES} - set(SAMPLES)
    assert not missing, f"add a sample request (and its scope) to SAMPLES for {missing}"


@pytest.fixture(autouse=True)
def _push_request_context():
    """Each request gets its own app context, as in production (see tests/test_admin.py)."""


def test_openapi_document_declares_the_api_key_on_every_server_route():
    # What the fuzzing (tests/test_fuzz.py) relies on to probe each route without a key.
    document = bare_app().test_client().get("/v1/openapi.json").get_json()
    assert document["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    documented = set()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if path.startswith("/v1/server/") and method != "parameters":
                documented.add((method.upper(), path))
                assert operation["security"] == [{"ApiKey": []}], (method, path)
                assert {"401", "403"} <= set(operation["responses"]), (method, path)
    assert documented == {
        (method, re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", path)) for _, method, path in ROUTES
    }


@pytest.fixture
def person(client, demo_site, make_key) -> dict:
    """Ada on the demo site: visitor token, user id and email, with recorded choices."""
    key = make_key(demo_site, *API_SCOPES)
    token = make_person(client, demo_site, key, email_marketing=False)
    SERVED_BANNER["hash"] = client.get(f"/v1/sites/{demo_site}/config").get_json()["config_hash"]
    return {"site": demo_site, "key": key, "token": token, "who": {"email": PERSON_EMAIL}}


@pytest.fixture
def other_site(app, make_site) -> str:
    """A second site with the same purposes as the demo site, email marketing included."""
    key = make_site()
    with app.app_context():
        set_purpose(
            get_site_by_key(key), "email_marketing", kind="communication", is_required=False
        )
        db.session.commit()
    return key


@pytest.fixture
def site_rows(app):
    """Counts of one site's rows in every table a request can write to."""

    def count(site_key: str) -> dict[str, int]:
        with app.app_context():
            site_id = db.session.scalar(select(Site.id).where(Site.key == site_key))
            subjects = select(Subject.id).where(Subject.site_id == site_id)
            queries = {
                "records": select(func.count()).where(ConsentRecord.site_id == site_id),
                "subjects": select(func.count()).where(Subject.site_id == site_id),
                "visitors": select(func.count()).where(Visitor.site_id == site_id),
                "state": select(func.count()).where(CurrentState.subject_id.in_(subjects)),
                "access log": select(func.count()).where(AccessLogEntry.site_id == site_id),
            }
            return {name: db.session.scalar(query) for name, query in queries.items()}

    return count


def call(
    client,
    endpoint: str,
    method: str,
    path: str,
    who: dict,
    token: str,
    headers: dict,
    extra_query: dict | None = None,
):
    """Send the endpoint's sample request about ``who`` with the given headers."""
    _, sample = SAMPLES[endpoint]
    request = sample(who, token)
    path = request.pop("path", path)  # a route with a parameter names it in its sample
    if extra_query:
        request["query_string"] = {**request.get("query_string", {}), **extra_query}
    return client.open(path, method=method, headers=headers, **request)


def bad_authorizations(client, runner, site: str, make_key) -> dict[str, str | None]:
    """Authorization headers that must all be refused with 401, by what is wrong."""
    valid = make_key(site, *API_SCOPES)
    prefix, secret = valid.split(".", 1)
    revoked = make_key(site, *API_SCOPES)
    result = runner.invoke(args=["revoke-key", revoked.split(".")[0]])
    assert result.exit_code == 0, result.output
    return {
        "missing": None,
        "empty": "",
        "scheme only": "Bearer",
        "scheme and space": "Bearer ",
        "not a key": "Bearer nonsense",
        "prefix only": f"Bearer {prefix}",
        "prefix and dot": f"Bearer {prefix}.",
        "wrong secret": f"Bearer {prefix}.{secret[::-1]}",
        "secret one character short": f"Bearer {valid[:-1]}",
        "secret one character long": f"Bearer {valid}x",
        "secret in upper case": f"Bearer {prefix}.{secret.upper()}",
        "unknown prefix": f"Bearer ck_000000000000.{secret}",
        "no scheme": valid,
        "basic scheme": "Basic " + base64.b64encode(valid.encode()).decode(),
        "token scheme": f"Token {valid}",
        "in the query only": None,
        "NUL in the secret": f"Bearer {prefix}.\x00{secret}",
        "NUL in the prefix": f"Bearer ck_\x00{prefix[3:]}.{secret}",
        "very long": f"Bearer {prefix}.{secret * 200}",
        "revoked": f"Bearer {revoked}",
    }


@pytest.mark.parametrize(("endpoint", "method", "path"), ROUTES, ids=ROUTE_IDS)
def test_route_refuses_every_bad_key(
    client, runner, person, make_key, site_rows, tally, endpoint, method, path
):
    authorizations = bad_authorizations(client, runner, person["site"], make_key)
    before = site_rows(person["site"])
    for name, authorization in authorizations.items():
        headers = {} if authorization is None else {"Authorization": authorization}
        extra_query = None
        if name == "in the query only":  # keys belong in a header, never in a URL
            extra_query = {"access_token": make_key(person["site"], *API_SCOPES)}
        response = call(
            client, endpoint, method, path, person["who"], person["token"], headers, extra_query
        )
        assert response.status_code == 401, (name, response.get_data(as_text=True))
        body = response.get_json()
        assert body["error"] == "unauthorized", name
        assert "API key" in body["message"], name
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), name
        assert site_rows(person["site"]) == before, name
        tally["server routes x wrong keys walked"] += 1


@pytest.mark.parametrize(("endpoint", "method", "path"), ROUTES, ids=ROUTE_IDS)
def test_route_needs_its_scope_and_no_other(
    client, person, make_key, site_rows, tally, endpoint, method, path
):
    scope, _ = SAMPLES[endpoint]
    before = site_rows(person["site"])

    def call_with_key(*scopes):
        key = bearer(make_key(person["site"], *scopes))
        return call(client, endpoint, method, path, person["who"], person["token"], key)

    for other in set(API_SCOPES) - {scope}:
        response = call_with_key(other)
        assert response.status_code == 403, (other, response.get_json())
        assert response.get_json()["error"] == "forbidden"
        assert repr(scope) in response.get_json()["message"]
        tally["server routes x wrong keys walked"] += 1
    response = call_with_key(*sorted(set(API_SCOPES) - {scope}))
    assert response.status_code == 403
    assert site_rows(person["site"]) == before
    # And the one scope is enough: the walk above was refused for the scope alone.
    only = call_with_key(scope)
    assert only.status_code in (200, 201), only.get_data(as_text=True)


@pytest.mark.parametrize(("endpoint", "method", "path"), ROUTES, ids=ROUTE_IDS)
def test_another_sites_key_never_reaches_this_sites_people(
    app, client, person, other_site, make_key, site_rows, tally, endpoint, method, path
):
    other_key = make_key(other_site, *API_SCOPES)
    before = site_rows(person["site"])
    with app.app_context():
        pseudonym = db.session.scalar(
            select(Subject.pseudonym).where(
                Subject.site_id
                == select(Site.id).where(Site.key == person["site"]).scalar_subquery(),
                Subject.erased_at.is_(None),
                Subject.email_digest.is_not(None),
            )
        )
    for identity, value in [
        ("email", PERSON_EMAIL),
        ("user_id", PERSON_USER_ID),
        ("visitor_token", person["token"]),
    ]:
        response = call(
            client, endpoint, method, path, {identity: value}, person["token"], bearer(other_key)
        )
        text = response.get_data(as_text=True)
        assert pseudonym not in text, identity
        if (
            endpoint == "server.Links"
            or identity == "visitor_token"
            and endpoint
            not in (
                "server.BulkCheck",
                "server.Suppression",
                "server.UnsubscribeLinks",
                "server.BannerVersions",
            )
        ):
            # This site's visitor token, presented by the other site: refused outright.
            assert response.status_code == 403, (identity, text)
            assert response.get_json()["errors"] == {
                "visitor_token": ["The visitor token belongs to another site."]
            }
        elif endpoint in (
            "server.SubjectExport",
            "server.SubjectCorrection",
            "server.SubjectErasure",
            "server.ServerRightsRequests",
        ):
            assert response.status_code in (404, 422), (identity, text)
        elif endpoint == "server.BannerVersions":  # this site's banner is not the other's
            assert response.status_code == 404, (identity, text)
        elif endpoint == "server.ServerCheck":
            assert (response.get_json()["allowed"], response.get_json()["reason"]) == (
                False,
                "no_decision",
            ), identity
        elif endpoint == "server.BulkCheck":
            assert [row["reason"] for row in response.get_json()["results"]] == ["no_decision"], (
                identity
            )
        elif endpoint == "server.Suppression":
            assert response.get_json()["items"] == [], identity
        else:  # records and unsubscribe links: made in the other site's own space
            assert response.status_code == 201, (identity, text)
        if endpoint == "server.UnsubscribeLinks":
            # The other site's link, followed, must not opt this site's person out.
            link = response.get_json()["links"][0]["url"]
            client.post(link, data={"List-Unsubscribe": "One-Click"})
        assert site_rows(person["site"]) == before, identity
        tally["server routes x other-site identities walked"] += 1


def test_another_sites_key_leaves_this_sites_answers_unchanged(
    client, person, other_site, make_key
):
    # After the other site recorded and erased for the same identifiers, this site's
    # own checks still answer as before.
    other_key = make_key(other_site, *API_SCOPES)
    for url, body in [
        (
            "/v1/server/records",
            {"email": PERSON_EMAIL, "decisions": [{"purpose": "email_marketing", "granted": True}]},
        ),
        ("/v1/server/records", {"user_id": PERSON_USER_ID, "decisions": DECISION}),
        ("/v1/server/subjects/erase", {"user_id": PERSON_USER_ID}),
    ]:
        assert client.post(url, json=body, headers=bearer(other_key)).status_code in (200, 201)
    answer = client.get(
        "/v1/server/check",
        headers=bearer(person["key"]),
        query_string={"purpose": "email_marketing", "email": PERSON_EMAIL},
    ).get_json()
    assert (answer["allowed"], answer["reason"]) == (False, "denied")
