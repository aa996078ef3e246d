"""Fuzzing from the contract: schemathesis against the served OpenAPI document.

Every operation in ``/v1/openapi.json`` is fuzzed through the Flask app, on SQLite and on
PostgreSQL, with data that fits the document and data that does not, with valid
credentials, the wrong ones and none. Every answer must be no 5xx, and must be what the
document says: a documented status code, content type, headers and body, and a 4xx for
data the document does not allow.

CI runs a fixed, seeded number of examples per operation; for a longer run set
``CONSENT_FUZZ_EXAMPLES`` (e.g. 1000). The counts are printed at the end of the run.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import schemathesis
from helpers import ACCEPT_ALL, bearer, submit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from consent import create_app

TEST_SECRETS = {"SECRET_KEY": "fuzz", "DATA_KEY": "a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s="}
EXAMPLES = int(os.environ.get("CONSENT_FUZZ_EXAMPLES", "40"))
OPENAPI_PATH = "/v1/openapi.json"
HTTP_METHODS = {"get", "post", "put", "patch", "delete"}
#: Data that fits the document may still be refused by the domain (an unknown purpose
#: is a 422), so "valid data is accepted" is not a check here; everything else is.
EXCLUDED_CHECKS = [positive_data_acceptance]

KNOWN_EMAIL = "ada@example.com"
KNOWN_USER_ID = "user-1"
PURPOSES = ["necessary", "preferences", "analytics", "marketing", "email_marketing"]
#: Values that break services: NUL (PostgreSQL refuses it), a trailing newline (regexes
#: ending in $), control and bidi characters, long strings, integers past 32 and 64 bits.
#: Headers and URLs carry only what HTTP can. (Lone surrogates, which schemathesis cannot
#: carry, are in test_bad_input.py.)
NASTY_HEADER = ["nul\x00inside", "tab\tinside", "caf\xe9", "x" * 2000, "' OR '1'='1"]
NASTY_PATH = [*NASTY_HEADER, "%00", "line\nbreak", "\u202eevil", "\U0001f600" * 20]
NASTY_QUERY = NASTY_PATH
NASTY_BODY = [*NASTY_QUERY, "a" * 64 + "\n", "x" * 20_000]
NASTY_NUMBERS = [-1, 0, 2**31, 2**63 - 1, 2**63, 2**64 + 1, -(2**63) - 1, 10**40]


def documented_operations() -> list[tuple[str, str]]:
    """(METHOD, path) of every operation the served document describes."""
    app = create_app({"TESTING": True, "DATABASE_URL": "sqlite://", **TEST_SECRETS})
    document = app.test_client().get(OPENAPI_PATH).get_json()
    return [
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    ]


@pytest.fixture(autouse=True)
def _push_request_context():
    """Each request gets its own app context, as in production (see tests/test_admin.py)."""


OPERATIONS = documented_operations()


@pytest.fixture
def world(client, demo_site, make_site, make_key, mailbox):
    """Two sites with keys, a visitor token each, and one known person on the demo site.

    Emails (rights requests) go to a real local SMTP server.
    """
    other = make_site()
    full = make_key(demo_site, "read", "write", "rights")
    client.post(
        "/v1/server/records",
        headers=bearer(full),
        json={"email": KNOWN_EMAIL, "decisions": [{"purpose": "email_marketing", "granted": True}]},
    )
    client.post(
        "/v1/server/records",
        headers=bearer(full),
        json={"user_id": KNOWN_USER_ID, "decisions": ACCEPT_ALL},
    )
    return {
        "site": {"demo": demo_site, "other": other},
        "key": {
            "full": full,
            "read": make_key(demo_site, "read"),
            "other": make_key(other, "read", "write", "rights"),
        },
        "token": {
            "demo": submit(client, demo_site, ACCEPT_ALL).get_json()["visitor_token"],
            "other": submit(client, other, ACCEPT_ALL).get_json()["visitor_token"],
        },
    }


def steer(case, world: dict, draw: Callable) -> dict[str, str]:
    """Point part of the generated data at things that exist, or at known troublemakers.

    Each substitution is drawn, so some cases keep the fuzzer's own (mostly unknown)
    site, key, token, purpose or identifier, some send no credentials at all, and some
    carry values that break services (NUL, lone surrogates, 64-bit overflow...). Parts
    are assigned anew so schemathesis re-checks whether the case is still invalid.
    Returns the API key header to send: schemathesis treats it as real credentials and
    also tries the call without them and with forged ones.
    """
    if "site_key" in (case.path_parameters or {}):
        site = draw(st.sampled_from(["demo", "demo", "demo", "other", "nasty", "generated"]))
        if site == "nasty":
            case.path_parameters = {"site_key": draw(st.sampled_from(NASTY_PATH))}
        elif site != "generated":
            case.path_parameters = {"site_key": world["site"][site]}
    headers = dict(case.headers or {})
    credentials = {}
    if case.operation.path.startswith("/v1/server/"):
        key = draw(st.sampled_from(["full", "full", "full", "read", "other", "none", "generated"]))
        if key == "none":
            headers.pop("Authorization", None)
        elif key != "generated":
            credentials = bearer(world["key"][key])
            headers.update(credentials)
    else:
        token = draw(st.sampled_from(["demo", "demo", "other", "none", "nasty", "generated"]))
        if token == "none":
            headers.pop("X-Consent-Token", None)
        elif token == "nasty":
            headers["X-Consent-Token"] = draw(st.sampled_from(NASTY_HEADER))
        elif token != "generated":
            headers["X-Consent-Token"] = world["token"][token]
    if "Idempotency-Key" in headers and draw(st.booleans()):
        headers["Idempotency-Key"] = draw(st.sampled_from(NASTY_HEADER))
    case.headers = headers
    if isinstance(case.query, dict):
        case.query = steer_fields(dict(case.query), world, draw, NASTY_QUERY)
    if isinstance(case.body, dict):
        case.body = steer_fields(dict(case.body), world, draw, NASTY_BODY)
    return credentials


def steer_fields(fields: dict, world: dict, draw: Callable, nasty_text: list[str]) -> dict:
    """Known purposes and identifiers, or troublemakers, in place of some generated values."""
    known = {
        "purpose": st.sampled_from(PURPOSES),
        "email": st.just(KNOWN_EMAIL),
        "user_id": st.just(KNOWN_USER_ID),
        "visitor_token": st.just(world["token"]["demo"]),
    }
    for name, value in fields.items():
        choice = draw(st.sampled_from(["generated", "known", "nasty"]))
        if choice == "known" and name in known:
            fields[name] = draw(known[name])
        elif choice == "nasty" and isinstance(value, str):
            fields[name] = draw(st.sampled_from(nasty_text))
        elif choice == "nasty" and isinstance(value, int) and not isinstance(value, bool):
            fields[name] = draw(st.sampled_from(NASTY_NUMBERS))
    if isinstance(fields.get("decisions"), list):
        fields["decisions"] = [
            {**decision, "purpose": draw(st.sampled_from(PURPOSES))}
            if isinstance(decision, dict) and draw(st.booleans())
            else decision
            for decision in fields["decisions"]
        ]
    return fields


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_operation_keeps_its_contract(app, world, dialect, tally, method, path):
    schema = schemathesis.openapi.from_wsgi(OPENAPI_PATH, app)
    operation = schema[path][method]
    cases = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(case=cases, data=st.data())
    def fuzz(case, data):
        credentials = steer(case, world, data.draw)
        tally[f"fuzz examples run ({dialect})"] += 1
        # Uncompressed: the test calls the app in-process, where nothing would decode it
        # (compression itself is tested in test_public_api).
        headers = {**credentials, "Accept-Encoding": "identity"}
        case.call_and_validate(headers=headers, excluded_checks=EXCLUDED_CHECKS)

    fuzz()
    tally[f"fuzz operations ({dialect})"] += 1
