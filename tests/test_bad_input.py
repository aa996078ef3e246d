"""Bad input: every malformed request gets a clear 4xx and writes nothing.

Matrices over the JSON routes: bodies that are not JSON, not an object, too deep, too
large or not UTF-8; fields of the wrong type, unknown, duplicated or out of range;
strings the databases cannot hold (NUL, lone surrogates) or should not (a trailing
newline); emails in odd forms; forged, truncated, re-signed and other-site tokens and
unsubscribe links. Each answer is the one JSON error shape naming the field (where
there is one), and no table a request can write to has changed.

Visitor tokens and unsubscribe links carry no expiry on purpose (a choice stands for
the site's lifetime; RFC 8058 links must keep working), so "expired" here means made
with a secret key that has since been replaced.
"""

from __future__ import annotations

import json

import pytest
from helpers import ACCEPT_ALL, PERSON_EMAIL, PERSON_USER_ID, bearer, make_person, submit
from itsdangerous import URLSafeSerializer
from sqlalchemy import func, select

from consent.db import db
from consent.errors import InvalidRequest
from consent.identifiers import normalise_email
from consent.models import (
    AccessLogEntry,
    ConsentRecord,
    CurrentState,
    IdempotentRequest,
    Subject,
    Visitor,
)
from consent.tokens import UNSUBSCRIBE_SALT, VISITOR_SALT

WRITABLE_TABLES = (ConsentRecord, Subject, Visitor, CurrentState, IdempotentRequest, AccessLogEntry)
ERROR_NAMES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_entity_too_large",
    415: "unsupported_media_type",
    422: "unprocessable_entity",
}
DECISION = [{"purpose": "analytics", "granted": True}]

#: Every JSON body route: (path with {site}, what a valid body looks like).
JSON_ROUTES = {
    "public records": ("/v1/sites/{site}/records", {"decisions": DECISION}),
    "server records": ("/v1/server/records", {"user_id": "u-new", "decisions": DECISION}),
    "links": ("/v1/server/links", {"visitor_token": "{token}", "user_id": "u-new"}),
    "bulk-check": (
        "/v1/server/bulk-check",
        {"purpose": "email_marketing", "emails": [PERSON_EMAIL]},
    ),
    "unsubscribe-links": (
        "/v1/server/unsubscribe-links",
        {"purpose": "email_marketing", "emails": [PERSON_EMAIL]},
    ),
    "correct": (
        "/v1/server/subjects/correct",
        {"user_id": PERSON_USER_ID, "field": "email", "value": "new@example.com"},
    ),
    "erase": ("/v1/server/subjects/erase", {"user_id": PERSON_USER_ID}),
}


@pytest.fixture(autouse=True)
def _push_request_context():
    """Each request gets its own app context, as in production (see tests/test_admin.py)."""


@pytest.fixture
def rows(app):
    """Row counts of every table a request can write to."""

    def count() -> dict[str, int]:
        with app.app_context():
            return {
                model.__tablename__: db.session.scalar(select(func.count()).select_from(model))
                for model in WRITABLE_TABLES
            }

    return count


@pytest.fixture
def person(client, demo_site, make_key) -> dict:
    """Ada on the demo site: a visitor token, a user id and an email, all recorded."""
    key = make_key(demo_site, "read", "write", "rights")
    token = make_person(client, demo_site, key, email_marketing=True)
    return {"site": demo_site, "key": key, "token": token}


def send(
    client, person, route, *, body=None, data=None, content_type="application/json", headers=None
):
    """POST to a JSON route as its caller would: with the site's key on server routes."""
    path = JSON_ROUTES[route][0].format(site=person["site"])
    all_headers = {} if path.startswith("/v1/sites/") else bearer(person["key"])
    all_headers.update(headers or {})
    if body is not None:
        data = json.dumps(body)
    return client.post(path, data=data, content_type=content_type, headers=all_headers)


def valid_body(route: str, person: dict) -> dict:
    body = json.loads(json.dumps(JSON_ROUTES[route][1]))
    if body.get("visitor_token") == "{token}":
        body["visitor_token"] = person["token"]
    return body


def assert_refused(response, status: int, field: str | tuple | None = None, case: object = ""):
    """The one error shape: status, a named error, a message and, if given, the field
    (or one of the fields)."""
    assert response.status_code == status, (case, response.get_data(as_text=True)[:500])
    assert response.mimetype == "application/json", case
    body = response.get_json()
    assert body["error"] == ERROR_NAMES[status], (case, body)
    assert body["message"], case
    if field is not None:
        names = field if isinstance(field, tuple) else (field,)
        assert set(names) & set(body.get("errors", {})), (case, body)
    return body


def test_each_route_accepts_its_valid_body(client, person, rows):
    # The matrices below are only worth something if the same route takes a good body.
    for route in JSON_ROUTES:
        response = send(client, person, route, body=valid_body(route, person))
        assert response.status_code in (200, 201), (route, response.get_json())


MALFORMED_BODIES = {
    "invalid JSON": (b'{"decisions": [', 400, "body"),
    "truncated object": (b'{"purpose":', 400, "body"),
    "trailing garbage": (b'{"purpose": "x"} yes', 400, "body"),
    "single quotes": (b"{'purpose': 'x'}", 400, "body"),
    "invalid UTF-8": (b'{"purpose": "\xff\xfe"}', 400, "body"),
    "UTF-16": ('{"purpose": "x"}'.encode("utf-16"), 400, "body"),
    "nested too deep": (b"[" * 30_000 + b"]" * 30_000, 400, "body"),
    "number too long to convert": (b'{"config_hash": ' + b"9" * 5_000 + b"}", 400, "body"),
    "array": (b"[]", 422, "body"),
    "string": (b'"hello"', 422, "body"),
    "number": (b"42", 422, "body"),
    "boolean": (b"true", 422, "body"),
    "null": (b"null", 422, "body"),
}


@pytest.mark.parametrize("name", MALFORMED_BODIES)
def test_malformed_body_is_refused_on_every_route(client, person, rows, tally, name):
    data, status, field = MALFORMED_BODIES[name]
    before = rows()
    for route in JSON_ROUTES:
        assert_refused(send(client, person, route, data=data), status, field, route)
        assert rows() == before, route
        tally["bad inputs tried"] += 1


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ('{"decisions": []}', "text/plain"),
        ("decisions=analytics", "application/x-www-form-urlencoded"),
        (
            "--x\r\nContent-Disposition: form-data; name=a\r\n\r\nb\r\n--x--\r\n",
            "multipart/form-data; boundary=x",
        ),
        ("<decisions/>", "application/xml"),
        ('{"decisions": []}', None),
    ],
)
def test_body_that_is_not_declared_json_gets_415_on_every_route(
    client, person, rows, tally, data, content_type
):
    # A cross-site form or a "simple" CORS request cannot carry application/json.
    before = rows()
    for route in JSON_ROUTES:
        response = send(client, person, route, data=data, content_type=content_type)
        assert_refused(response, 415, case=route)
        assert rows() == before, route
        tally["bad inputs tried"] += 1


def test_body_over_the_limit_gets_413_json_on_every_route(app, client, person, rows, tally):
    before = rows()
    for route in JSON_ROUTES:
        limit = app.config["MAX_CONTENT_LENGTH"]
        if route in ("bulk-check", "unsubscribe-links"):  # these take 10,000 addresses
            limit = app.config["LIST_MAX_CONTENT_LENGTH"]
        body = valid_body(route, person)
        body["padding"] = "x" * limit
        assert_refused(send(client, person, route, body=body), 413, case=route)
        assert rows() == before, route
        tally["bad inputs tried"] += 1


#: Every server route, and a request to it that is wrong in every way but the key.
SERVER_ROUTES = [
    ("POST", JSON_ROUTES[route][0])
    for route in JSON_ROUTES
    if "/v1/server/" in JSON_ROUTES[route][0]
] + [
    ("GET", "/v1/server/check"),
    ("GET", "/v1/server/suppression"),
    ("GET", "/v1/server/subjects/export"),
]


@pytest.mark.parametrize(("method", "path"), SERVER_ROUTES)
@pytest.mark.parametrize("key", [None, "Bearer nope.wrong"], ids=["no key", "wrong key"])
def test_server_routes_authenticate_before_they_validate(client, person, rows, method, path, key):
    before = rows()
    headers = {"Authorization": key} if key else {}
    response = client.open(
        path, method=method, json={"unknown": 1} if method == "POST" else None, headers=headers
    )
    assert_refused(response, 401, case=path)
    assert "errors" not in response.get_json()
    assert rows() == before


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/v1/sites/{site}/check", {"GET", "HEAD", "OPTIONS"}),
        ("DELETE", "/v1/sites/{site}/records", {"POST", "OPTIONS"}),
        ("PUT", "/v1/server/records", {"POST", "OPTIONS"}),
        ("POST", "/v1/server/check", {"GET", "HEAD", "OPTIONS"}),
    ],
)
def test_method_not_allowed_names_the_allowed_methods(client, person, method, path, allowed):
    response = client.open(path.format(site=person["site"]), method=method, json={})
    assert_refused(response, 405)
    assert set(response.headers["Allow"].replace(" ", "").split(",")) == allowed


def test_json_just_under_the_recursion_limit_is_a_field_error(client, person, rows):
    depth = 500
    data = '{"decisions": ' + "[" * depth + "]" * depth + "}"
    before = rows()
    assert_refused(send(client, person, "public records", data=data), 422, "decisions.0")
    assert rows() == before


#: (route, field changes, the field the error must name). ``None`` deletes the field.
WRONG_FIELDS = [
    ("public records", {"decisions": None}, "decisions"),
    ("public records", {"decisions": "all"}, "decisions"),
    ("public records", {"decisions": {}}, "decisions"),
    ("public records", {"decisions": [1]}, "decisions.0"),
    ("public records", {"decisions": [[]]}, "decisions.0"),
    ("public records", {"decisions": [{"purpose": 1, "granted": True}]}, "decisions.0.purpose"),
    ("public records", {"decisions": [{"purpose": "analytics"}]}, "decisions.0.granted"),
    (
        "public records",
        {"decisions": [{"purpose": "analytics", "granted": None}]},
        "decisions.0.granted",
    ),
    (
        "public records",
        {"decisions": [{"purpose": "analytics", "granted": "true"}]},
        "decisions.0.granted",
    ),
    (
        "public records",
        {"decisions": [{"purpose": "analytics", "granted": 1.0}]},
        "decisions.0.granted",
    ),
    (
        "public records",
        {"decisions": [{"purpose": "Analytics", "granted": True}]},
        "decisions.0.purpose",
    ),
    (
        "public records",
        {"decisions": [{"purpose": "analytics\n", "granted": True}]},
        "decisions.0.purpose",
    ),
    (
        "public records",
        {"decisions": [{"purpose": "analytics", "granted": True, "services": ["matomo"]}]},
        "decisions.0.services",
    ),
    (
        "public records",
        {"decisions": [{"purpose": "analytics", "granted": True, "services": {"matomo": "yes"}}]},
        "decisions.0.services.matomo.value",
    ),
    (
        "public records",
        {"decisions": [{"purpose": "analytics", "granted": True, "extra": 1}]},
        "decisions.0.extra",
    ),
    ("public records", {"decisions": DECISION * 51}, "decisions"),
    ("public records", {"source": "admin"}, "source"),
    ("public records", {"source": "unsubscribe"}, "source"),
    ("public records", {"policy_version": 5}, "policy_version"),
    ("public records", {"policy_version": ""}, "policy_version"),
    ("public records", {"policy_version": "v" * 65}, "policy_version"),
    ("public records", {"config_hash": "xyz"}, "config_hash"),
    ("public records", {"config_hash": "A" * 64}, "config_hash"),
    ("public records", {"config_hash": "a" * 64 + "\n"}, "config_hash"),
    ("public records", {"language": "english!"}, "language"),
    ("public records", {"language": "en\n"}, "language"),
    ("public records", {"visitor_id": "someone-else"}, "visitor_id"),
    ("server records", {"user_id": None}, "user_id"),
    ("server records", {"user_id": 42}, "user_id"),
    ("server records", {"user_id": ""}, "user_id"),
    ("server records", {"user_id": "   "}, "user_id"),
    ("server records", {"user_id": "u" * 201}, "user_id"),
    ("server records", {"email": PERSON_EMAIL}, "user_id"),
    ("server records", {"user_id": ["a"]}, "user_id"),
    ("server records", {"source": "banner"}, "source"),
    (
        "server records",
        {"decisions": [{"purpose": "email_marketing", "granted": True}] * 2},
        "decisions.1.purpose",
    ),
    (
        "server records",
        {
            "decisions": [
                {"purpose": "email_marketing", "granted": True},
                {"purpose": "pigeons", "granted": True},
            ]
        },
        "decisions.1.purpose",
    ),
    ("server records", {"policy_version": "1999-01-01"}, "policy_version"),
    ("server records", {"recorded_at": "2020-01-01T00:00:00Z"}, "recorded_at"),
    (
        "server records",
        {"decisions": [{"purpose": "necessary", "granted": False}]},
        "decisions.0.granted",
    ),
    (
        "server records",
        {"decisions": [{"purpose": "analytics", "granted": False, "services": {"nothing": False}}]},
        "decisions.0.services",
    ),
    ("links", {"user_id": None}, "user_id"),
    ("links", {"visitor_token": None}, "visitor_token"),
    ("links", {"visitor_token": 7}, "visitor_token"),
    ("links", {"user_id": {"id": 1}}, "user_id"),
    ("bulk-check", {"purpose": None}, "purpose"),
    ("bulk-check", {"purpose": "pigeons"}, "purpose"),
    ("bulk-check", {"emails": PERSON_EMAIL}, "emails"),
    ("bulk-check", {"emails": []}, "emails"),
    ("bulk-check", {"emails": [1, 2]}, "emails.0"),
    ("bulk-check", {"emails": ["x" * 321]}, "emails.0"),
    ("bulk-check", {"emails": None}, "emails"),
    ("bulk-check", {"user_ids": ["a"]}, "emails"),
    ("unsubscribe-links", {"purpose": "necessary"}, "purpose"),
    ("unsubscribe-links", {"purpose": "pigeons"}, "purpose"),
    ("unsubscribe-links", {"emails": [PERSON_EMAIL, "not-an-address"]}, "emails.1"),
    ("unsubscribe-links", {"emails": ["fresh@example.com", "bad"]}, "emails.1"),
    ("unsubscribe-links", {"emails": [PERSON_EMAIL] * 1001}, "emails"),
    ("correct", {"field": "pseudonym"}, "field"),
    ("correct", {"field": None}, "field"),
    ("correct", {"value": ""}, "value"),
    ("correct", {"value": 5}, "value"),
    ("correct", {"field": "user_id", "value": "u" * 201}, "user_id"),
    ("correct", {"value": "not-an-address"}, "email"),
    ("correct", {"user_id": None, "email": PERSON_EMAIL, "visitor_token": "{token}"}, "user_id"),
    ("erase", {"user_id": None}, "user_id"),
    ("erase", {"email": PERSON_EMAIL}, "user_id"),
    ("erase", {"user_id": None, "email": "@example.com"}, "email"),
    ("erase", {"format": "csv"}, "format"),
]


@pytest.mark.parametrize("route", JSON_ROUTES)
def test_wrong_fields_are_refused_by_name(client, person, rows, tally, route):
    before = rows()
    for changes, field in [(changes, field) for r, changes, field in WRONG_FIELDS if r == route]:
        body = valid_body(route, person)
        for name, value in changes.items():
            if value is None:
                body.pop(name, None)
            else:
                body[name] = person["token"] if value == "{token}" else value
        assert_refused(send(client, person, route, body=body), 422, field, changes)
        assert rows() == before, changes
        tally["bad inputs tried"] += 1


#: Strings neither database should hold: PostgreSQL refuses NUL outright, and a lone
#: surrogate (JSON's "\ud800") cannot be encoded as UTF-8 at all.
UNSTORABLE = {"NUL": "nul\x00inside", "lone surrogate": "\ud800", "trailing surrogate": "a\udfff"}

#: Every free-text field of every JSON route.
TEXT_FIELDS = [
    ("public records", "policy_version"),
    ("public records", "language"),
    ("public records", "config_hash"),
    ("server records", "user_id"),
    ("server records", "email"),
    ("server records", "visitor_token"),
    ("server records", "policy_version"),
    ("links", "visitor_token"),
    ("links", "user_id"),
    ("bulk-check", "purpose"),
    ("unsubscribe-links", "purpose"),
    ("correct", "user_id"),
    ("correct", "value"),
    ("erase", "user_id"),
]


@pytest.mark.parametrize("kind", UNSTORABLE)
def test_text_the_database_cannot_hold_is_refused_in_every_field(client, person, rows, tally, kind):
    before = rows()
    for route, field in TEXT_FIELDS:
        body = valid_body(route, person)
        if field in ("user_id", "email", "visitor_token") and route != "links":
            for identity in ("user_id", "email", "visitor_token"):
                body.pop(identity, None)
        body[field] = UNSTORABLE[kind]
        assert_refused(send(client, person, route, body=body), 422, field, (route, field))
        assert rows() == before, (route, field)
        tally["bad inputs tried"] += 1


def test_unstorable_purpose_and_service_names_are_refused(client, person, rows, tally):
    before = rows()
    for text in UNSTORABLE.values():
        for decision, field in [
            ({"purpose": text, "granted": True}, "decisions.0.purpose"),
            (
                {"purpose": "analytics", "granted": True, "services": {text: True}},
                "decisions.0.services",
            ),
        ]:
            response = send(client, person, "public records", body={"decisions": [decision]})
            body = assert_refused(response, 422, case=decision)
            assert any(name.startswith(field) for name in body["errors"]), body
            assert rows() == before, decision
            tally["bad inputs tried"] += 1


def test_very_long_strings_are_refused_not_truncated(client, person, rows, tally):
    before = rows()
    for route, field, length in [
        ("public records", "policy_version", 65),
        ("public records", "policy_version", 60_000),
        ("server records", "user_id", 201),
        ("server records", "user_id", 60_000),
        ("links", "visitor_token", 501),
        ("bulk-check", "purpose", 65),
    ]:
        body = valid_body(route, person)
        body[field] = "v" * length
        assert_refused(send(client, person, route, body=body), 422, field, (route, length))
        assert rows() == before, (route, field)
        tally["bad inputs tried"] += 1


def test_unstorable_idempotency_key_is_refused(client, person, rows):
    before = rows()
    response = send(
        client,
        person,
        "public records",
        body={"decisions": DECISION},
        headers={"Idempotency-Key": "retry\x00one-of-many-attempts"},
    )
    assert_refused(response, 422, "Idempotency-Key")
    assert rows() == before


@pytest.mark.parametrize("route", ["public records", "server records"])
@pytest.mark.parametrize("key", ["", "1", "retry", "x" * 15], ids=["empty", "1", "5", "15"])
def test_guessably_short_idempotency_key_is_refused(client, person, rows, route, key):
    before = rows()
    response = send(
        client, person, route, body=valid_body(route, person), headers={"Idempotency-Key": key}
    )
    assert_refused(response, 422, "Idempotency-Key")
    assert rows() == before


def test_sixteen_characters_are_enough_for_an_idempotency_key(client, person, rows):
    headers = {"Idempotency-Key": "x" * 16}
    response = send(client, person, "public records", body={"decisions": DECISION}, headers=headers)
    assert response.status_code == 201


#: (query, field) for the GET routes; each is sent with the site's key where needed.
WRONG_QUERIES = [
    ("/v1/sites/{site}/check", {}, "purpose"),
    ("/v1/sites/{site}/check", {"purpose": ""}, "purpose"),
    ("/v1/sites/{site}/check", {"purpose": "p" * 65}, "purpose"),
    ("/v1/sites/{site}/check", {"purpose": "analytics", "service": ""}, "service"),
    ("/v1/sites/{site}/check", {"purpose": "nul\x00"}, "purpose"),
    ("/v1/server/check", {"purpose": "analytics"}, "user_id"),
    (
        "/v1/server/check",
        {"purpose": "analytics", "user_id": "a", "email": PERSON_EMAIL},
        "user_id",
    ),
    ("/v1/server/check", {"purpose": "analytics", "email": "not-an-address"}, "email"),
    ("/v1/server/check", {"purpose": "analytics", "user_id": "nul\x00"}, "user_id"),
    ("/v1/server/suppression", {}, "purpose"),
    ("/v1/server/suppression", {"purpose": "pigeons"}, "purpose"),
    ("/v1/server/suppression", {"purpose": "email_marketing", "limit": "0"}, "limit"),
    ("/v1/server/suppression", {"purpose": "email_marketing", "limit": "ten"}, "limit"),
    ("/v1/server/suppression", {"purpose": "email_marketing", "limit": "10001"}, "limit"),
    ("/v1/server/suppression", {"purpose": "email_marketing", "after": "-1"}, "after"),
    ("/v1/server/suppression", {"purpose": "email_marketing", "after": str(2**31)}, "after"),
    ("/v1/server/suppression", {"purpose": "email_marketing", "after": str(2**63)}, "after"),
    ("/v1/server/suppression", {"purpose": "email_marketing", "after": "1e3"}, "after"),
    ("/v1/server/suppression", {"purpose": "email_marketing", "format": "xml"}, "format"),
    ("/v1/server/subjects/export", {}, "user_id"),
    ("/v1/server/subjects/export", {"user_id": PERSON_USER_ID, "format": "pdf"}, "format"),
    ("/v1/server/subjects/export", {"email": "a@b"}, "email"),
]


@pytest.mark.parametrize("path", sorted({path for path, _, _ in WRONG_QUERIES}))
def test_wrong_queries_are_refused_by_name(client, person, rows, tally, path):
    headers = {} if path.startswith("/v1/sites/") else bearer(person["key"])
    before = rows()
    for query, field in [(query, field) for p, query, field in WRONG_QUERIES if p == path]:
        response = client.get(path.format(site=person["site"]), query_string=query, headers=headers)
        assert_refused(response, 422, field, query)
        assert rows() == before, query
        tally["bad inputs tried"] += 1


BAD_SITE_KEYS = [
    "no-such-site",
    "DEMO",
    "demo%0A",
    "de\x00mo",
    "x" * 300,
    "%00",
    "..",
    "demo%2Fconfig",
    "\u202edemo",
    "d\xe9mo",
]


@pytest.mark.parametrize("route", ["config", "records", "me", "check", "shown"])
def test_unknown_or_malformed_site_key_is_404(client, person, rows, tally, route):
    before = rows()
    for site_key in BAD_SITE_KEYS:
        path = f"/v1/sites/{site_key}/{route}"
        # The check reads the token before the site (one query for both): another site's
        # token is refused there first, with 403.
        headers = {} if route == "check" else {"X-Consent-Token": person["token"]}
        if route in ("records", "shown"):
            response = client.post(path, json={"decisions": DECISION}, headers=headers)
        else:
            response = client.get(path, query_string={"purpose": "analytics"}, headers=headers)
        assert_refused(response, 404, case=site_key)
        assert rows() == before, site_key
        tally["bad inputs tried"] += 1


# --- emails in odd forms --------------------------------------------------------------

#: Not addresses: refused where one address is expected, "invalid" in a bulk check.
NOT_EMAILS = [
    "plainaddress",
    "@example.com",
    "ada@",
    "ada@example",
    "ada@.example.com",
    "ada@example.com.",
    "ada@example..com",
    "ada@@example.com",
    "ada smith@example.com",
    "<ada@example.com>",
    "ada@example.com,bob@example.com",
    "ada@example.com;",
    '"ada"@example.com',
    "ada@exa mple.com",
    "ada\r\n@example.com",
    "ada@example.com\x00",
    "a" * 250 + "@example.com",
    "ada@(comment)example.com",
    "\u202eada@example.com",
]
#: Odd forms of Ada's own address: each finds Ada, never someone new.
ADA_VARIANTS = [" ada@example.com", "ADA@EXAMPLE.COM", "Ada@Example.Com\t", "ada@example.com\n"]


def test_the_all_ascii_shortcut_judges_every_character_as_the_general_rule():
    """``normalise_email`` checks all-ASCII addresses with one regex: same verdicts."""

    def refused(address: str) -> bool:
        try:
            normalise_email(address)
        except InvalidRequest:
            return True
        return False

    for code in range(128):
        ascii_only = f"a{chr(code)}b@example.com"
        # The same character in an address that also holds an (allowed) accented letter
        # goes through the general, per-character rule.
        general = f"a{chr(code)}b@exampl\xe9.com"
        assert refused(ascii_only) == refused(general), repr(chr(code))
    assert refused("a\x7fb@example.com") and not refused("a.b+c@example.com")


@pytest.mark.parametrize(
    "route", ["server records", "correct", "erase", "unsubscribe-links", "server check", "export"]
)
def test_not_an_email_is_refused_by_name(client, person, rows, tally, route):
    before = rows()
    for email in NOT_EMAILS:
        if route in ("server check", "export"):
            path = "/v1/server/check" if route == "server check" else "/v1/server/subjects/export"
            response = client.get(
                path,
                headers=bearer(person["key"]),
                query_string={"purpose": "email_marketing", "email": email},
            )
            field = "email"
        else:
            body = valid_body(route, person)
            if route == "correct":  # the new value: "value" is the field, "email" its kind
                body["value"], field = email, ("value", "email")
            elif route == "unsubscribe-links":
                body["emails"], field = [email], "emails.0"
            else:
                body.pop("user_id")
                body["email"], field = email, "email"
            response = send(client, person, route, body=body)
        assert_refused(response, 422, field, email)
        assert rows() == before, email
        tally["bad inputs tried"] += 1


def test_bulk_check_answers_invalid_for_each_odd_email(client, person, rows, tally):
    emails = [*NOT_EMAILS, "\ud800@example.com", *ADA_VARIANTS]
    before = rows()
    response = send(
        client, person, "bulk-check", body={"purpose": "email_marketing", "emails": emails}
    )
    assert response.status_code == 200
    reasons = [result["reason"] for result in response.get_json()["results"]]
    assert reasons == ["invalid"] * (len(NOT_EMAILS) + 1) + ["granted"] * len(ADA_VARIANTS)
    # Nothing is written but the access log's note of the check itself.
    assert rows() == {**before, "access_log": before["access_log"] + 1}
    tally["bad inputs tried"] += len(emails)


def test_odd_forms_of_a_known_address_find_the_same_person(client, person, rows):
    before = rows()
    for email in ADA_VARIANTS:
        response = client.get(
            "/v1/server/check",
            query_string={"purpose": "email_marketing", "email": email},
            headers=bearer(person["key"]),
        )
        assert response.get_json()["reason"] == "granted", email
        links = send(
            client,
            person,
            "unsubscribe-links",
            body={"purpose": "email_marketing", "emails": [email]},
        )
        assert links.status_code == 201, email
        assert rows() == before, email  # no second subject for the same address


# --- tokens and links -----------------------------------------------------------------


def forged_tokens(app, person, other_token) -> dict[str, str]:
    """Visitor tokens that must not be accepted for the demo site, by what is wrong."""
    genuine = person["token"]
    payload, signature = genuine.rsplit(".", 1)
    with app.app_context():
        ours = URLSafeSerializer(app.config["SECRET_KEY"], salt=VISITOR_SALT)
        old_key = URLSafeSerializer("a secret key since replaced", salt=VISITOR_SALT)
        link_salt = URLSafeSerializer(app.config["SECRET_KEY"], salt=UNSUBSCRIBE_SALT)
        visitor = ours.loads(genuine)["visitor"]
        return {
            "random": "not-a-token",
            "empty signature": payload + ".",
            "truncated": genuine[:-4],
            "signature of another token": payload + "." + other_token.rsplit(".", 1)[1],
            "payload edited": payload[:-2]
            + ("AA" if not payload.endswith("AA") else "BB")
            + "."
            + signature,
            "signed with a replaced secret (expired)": old_key.dumps(
                {"site": person["site"], "visitor": visitor}
            ),
            "signed as an unsubscribe link": link_salt.dumps(
                {"site": person["site"], "visitor": visitor}
            ),
            "payload without a visitor": ours.dumps({"site": person["site"]}),
            "payload that is a list": ours.dumps([person["site"], visitor]),
            "very long": genuine + "A" * 5_000,
            "another site's token": other_token,
        }


TOKEN_ROUTES = [
    "public records",
    "public me",
    "public check",
    "server records",
    "links",
    "server check",
    "export",
    "correct",
    "erase",
]


@pytest.mark.parametrize("route", TOKEN_ROUTES)
def test_bad_visitor_tokens_are_refused_by_name(app, client, person, make_site, rows, tally, route):
    other = make_site()
    other_token = submit(client, other, ACCEPT_ALL).get_json()["visitor_token"]
    tokens = forged_tokens(app, person, other_token)
    for name, token in tokens.items():
        before = rows()
        status = 403 if name == "another site's token" else 401
        if name == "very long" and not route.startswith("public"):
            status = 422  # longer than the field allows
        site, key = person["site"], person["key"]
        if route.startswith("public"):
            field, headers = "X-Consent-Token", {"X-Consent-Token": token}
            if route == "public records":
                response = client.post(
                    f"/v1/sites/{site}/records", json={"decisions": DECISION}, headers=headers
                )
            else:
                response = client.get(
                    f"/v1/sites/{site}/{route.split()[1]}",
                    query_string={"purpose": "analytics"},
                    headers=headers,
                )
        elif route in ("server check", "export"):
            field = "visitor_token"
            path = "/v1/server/check" if route == "server check" else "/v1/server/subjects/export"
            response = client.get(
                path,
                query_string={"purpose": "analytics", "visitor_token": token},
                headers=bearer(key),
            )
        else:
            field = "visitor_token"
            body = valid_body(route, person)
            for identity in ("user_id", "email") if route != "links" else ():
                body.pop(identity, None)
            body["visitor_token"] = token
            response = send(client, person, route, body=body)
        assert_refused(response, status, field, name)
        assert rows() == before, name
        tally["bad inputs tried"] += 1


def unsubscribe_tokens(app, client, person) -> dict[str, str]:
    """Unsubscribe links that must record nothing, by what is wrong with them."""
    link = send(
        client,
        person,
        "unsubscribe-links",
        body={"purpose": "email_marketing", "emails": [PERSON_EMAIL]},
    )
    genuine = link.get_json()["links"][0]["url"].rsplit("/", 1)[1]
    with app.app_context():
        ours = URLSafeSerializer(app.config["SECRET_KEY"], salt=UNSUBSCRIBE_SALT)
        old_key = URLSafeSerializer("a secret key since replaced", salt=UNSUBSCRIBE_SALT)
        subject = ours.loads(genuine)["subject"]
        return {
            "random": "not-a-link",
            "truncated": genuine[:-4],
            "signature edited": genuine[:-2] + ("AA" if not genuine.endswith("AA") else "BB"),
            "signed with a replaced secret (expired)": old_key.dumps(
                {"site": person["site"], "subject": subject, "p": "email_marketing"}
            ),
            "a visitor token": person["token"],
            "unknown site": ours.dumps(
                {"site": "gone", "subject": subject, "p": "email_marketing"}
            ),
            "unknown subject": ours.dumps(
                {"site": person["site"], "subject": "nobody", "p": "email_marketing"}
            ),
            "unknown purpose": ours.dumps(
                {"site": person["site"], "subject": subject, "p": "pigeons"}
            ),
            "required purpose": ours.dumps(
                {"site": person["site"], "subject": subject, "p": "necessary"}
            ),
            "payload that is a list": ours.dumps([person["site"], subject]),
            "NUL": "abc%00def",
            "very long": genuine + "A" * 5_000,
        }


def test_bad_unsubscribe_links_get_the_neutral_page_and_record_nothing(
    app, client, person, rows, tally
):
    tokens = unsubscribe_tokens(app, client, person)
    confirm_page = client.get("/unsubscribe/some-token").get_data(as_text=True)
    done = client.post("/unsubscribe/some-token", data={"List-Unsubscribe": "One-Click"})
    before = rows()
    for name, token in tokens.items():
        page = client.get(f"/unsubscribe/{token}")
        assert page.status_code == 200, name
        # The same page as for any other token: only the token in the form differs.
        rendered = page.get_data(as_text=True)
        assert rendered.replace(token, "") == confirm_page.replace("some-token", ""), name
        answer = client.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
        assert (answer.status_code, answer.data) == (done.status_code, done.data), name
        choice = {"action": "subscribe", "purpose": "email_marketing"}
        answer = client.post(f"/unsubscribe/{token}", data=choice)
        assert (answer.status_code, answer.text) == (200, confirm_page), name
        assert rows() == before, name
        tally["bad inputs tried"] += 1
    check = client.get(
        "/v1/server/check",
        query_string={"purpose": "email_marketing", "email": PERSON_EMAIL},
        headers=bearer(person["key"]),
    )
    assert check.get_json()["reason"] == "granted"
