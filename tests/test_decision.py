"""Every caller of the decision answers the same for the same state.

One table of states (what a person chose, and what happened since) against every
surface that says whether a purpose may run: the public check through Flask and
through its fast path, the server check by each identifier, the bulk check, the
export, the visitor's own state and the suppression list.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from helpers import ACCEPT_ALL, PERSON_EMAIL, PERSON_USER_ID, REJECT_ALL, bearer, submit

import consent.chain
import consent.decision

#: As the test app: the limiter on, out of reach.
HIGH_LIMITS = {"RATELIMIT_RECORD": "100000/minute", "RATELIMIT_CHECK": "100000/minute"}
LIFETIME_DAYS = 30
REGION_HEADERS = {"REGION_HEADER": "CF-IPCountry", "SUBREGION_HEADER": "CF-Region-Code"}


def _make_person(client, site, key, decisions) -> str:
    """A visitor with these decisions, linked to a user id and an email; their token."""
    token = submit(client, site, decisions).get_json()["visitor_token"]
    for url, body in [
        ("/v1/server/links", {"visitor_token": token, "user_id": PERSON_USER_ID}),
        (
            "/v1/server/subjects/correct",
            {"user_id": PERSON_USER_ID, "field": "email", "value": PERSON_EMAIL},
        ),
    ]:
        assert client.post(url, json=body, headers=bearer(key)).status_code in (200, 201)
    return token


def granted(client, runner, site, key, monkeypatch):
    return _make_person(client, site, key, ACCEPT_ALL), "analytics"


def required(client, runner, site, key, monkeypatch):
    return _make_person(client, site, key, ACCEPT_ALL), "necessary"


def unknown(client, runner, site, key, monkeypatch):
    return _make_person(client, site, key, ACCEPT_ALL), "telepathy"


def no_decision(client, runner, site, key, monkeypatch):
    only_preferences = [{"purpose": "preferences", "granted": True}]
    return _make_person(client, site, key, only_preferences), "analytics"


def denied(client, runner, site, key, monkeypatch):
    return _make_person(client, site, key, REJECT_ALL), "analytics"


def withdrawn(client, runner, site, key, monkeypatch):
    token = _make_person(client, site, key, ACCEPT_ALL)
    assert submit(client, site, REJECT_ALL, token=token).status_code == 201
    return token, "analytics"


def _decided_long_ago(client, site, key, monkeypatch, decisions) -> str:
    """A person whose decisions were taken longer ago than a choice stands; their token."""
    long_ago = consent.chain.now_utc() - timedelta(days=LIFETIME_DAYS + 1)
    monkeypatch.setattr(consent.chain, "now_utc", lambda: long_ago)
    token = _make_person(client, site, key, decisions)
    monkeypatch.undo()
    return token


def expired(client, runner, site, key, monkeypatch):
    return _decided_long_ago(client, site, key, monkeypatch, ACCEPT_ALL), "analytics"


def stale(client, runner, site, key, monkeypatch):
    token = _make_person(client, site, key, ACCEPT_ALL)
    result = runner.invoke(args=["add-policy", site, "v2", "--material"])
    assert result.exit_code == 0, result.output
    return token, "analytics"


def erased(client, runner, site, key, monkeypatch):
    token = _make_person(client, site, key, ACCEPT_ALL)
    response = client.post(
        "/v1/server/subjects/erase", json={"user_id": PERSON_USER_ID}, headers=bearer(key)
    )
    assert response.status_code == 200
    return token, "analytics"


def _opt_out_in_us_states(runner, site) -> None:
    """The site lets analytics and marketing run in the US privacy states until opted out."""
    result = runner.invoke(
        args=["set-regions", site, "EEA,UK,CH=opt-in", "US-PRIVACY-STATES=opt-out"]
        + ["--opt-out", "analytics", "--opt-out", "marketing"]
    )
    assert result.exit_code == 0, result.output


def opt_out_default(client, runner, site, key, monkeypatch):
    _opt_out_in_us_states(runner, site)
    return no_decision(client, runner, site, key, monkeypatch)


def opt_out_refused(client, runner, site, key, monkeypatch):
    _opt_out_in_us_states(runner, site)
    return denied(client, runner, site, key, monkeypatch)


def opt_out_refusal_expired(client, runner, site, key, monkeypatch):
    _opt_out_in_us_states(runner, site)
    return _decided_long_ago(client, site, key, monkeypatch, REJECT_ALL), "analytics"


def opt_out_grant_stale(client, runner, site, key, monkeypatch):
    _opt_out_in_us_states(runner, site)
    return stale(client, runner, site, key, monkeypatch)


def opt_out_under_gpc(client, runner, site, key, monkeypatch):
    _opt_out_in_us_states(runner, site)
    only_preferences = [{"purpose": "preferences", "granted": True}]
    return _make_person(client, site, key, only_preferences), "marketing"


#: State: (how to arrange it, the answer every caller must give). Every caller asks
#: for a person in California (US-CA) whose browser sends Global Privacy Control.
STATES = {
    "granted": (granted, (True, "granted")),
    "required": (required, (True, "required")),
    "unknown": (unknown, (False, "unknown_purpose")),
    "no_decision": (no_decision, (False, "no_decision")),
    "denied": (denied, (False, "denied")),
    "withdrawn": (withdrawn, (False, "withdrawn")),
    "expired": (expired, (False, "expired")),
    "stale": (stale, (False, "stale_policy")),
    "erased": (erased, (False, "erased")),
    # Under an opt-out rule, for a purpose the site marked: allowed until opted out...
    "opt_out_default": (opt_out_default, (True, "opt_out_default")),
    # ...a recorded choice wins, and an opt-out stands once expired; a grant lapses
    # into the default...
    "opt_out_refused": (opt_out_refused, (False, "denied")),
    "opt_out_refusal_expired": (opt_out_refusal_expired, (False, "denied")),
    "opt_out_grant_stale": (opt_out_grant_stale, (True, "opt_out_default")),
    # ...and Global Privacy Control opts out of advertising.
    "opt_out_under_gpc": (opt_out_under_gpc, (False, "no_decision")),
}
#: Where the person is, for the callers that take it.
CALIFORNIA = {"CF-IPCountry": "US", "CF-Region-Code": "CA", "Sec-GPC": "1"}
WHERE = {"region": "US-CA", "gpc": "true"}


def _answer(response) -> tuple[bool, str]:
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    return body["allowed"], body["reason"]


def public_check(surfaces, token, purpose):
    query = {"purpose": purpose}
    headers = {**token, **CALIFORNIA}
    return _answer(surfaces.flask.get(surfaces.check_url, query_string=query, headers=headers))


def public_check_fast_path(surfaces, token, purpose):
    query = {"purpose": purpose}
    headers = {**token, **CALIFORNIA}
    answer = _answer(surfaces.fast.get(surfaces.check_url, query_string=query, headers=headers))
    assert surfaces.flask_dispatches == [], "Flask answered, not the fast path"
    return answer


def _server_check(surfaces, purpose, **identity):
    return _answer(
        surfaces.flask.get(
            "/v1/server/check",
            query_string={"purpose": purpose, **identity, **WHERE},
            headers=surfaces.key,
        )
    )


def server_check_by_user_id(surfaces, token, purpose):
    return _server_check(surfaces, purpose, user_id=PERSON_USER_ID)


def server_check_by_email(surfaces, token, purpose):
    return _server_check(surfaces, purpose, email=PERSON_EMAIL)


def server_check_by_visitor_token(surfaces, token, purpose):
    return _server_check(surfaces, purpose, visitor_token=token["X-Consent-Token"])


def _bulk_check(surfaces, purpose, kind, value):
    response = surfaces.flask.post(
        "/v1/server/bulk-check",
        json={"purpose": purpose, kind: [value], "region": WHERE["region"]},
        headers=surfaces.key,
    )
    assert response.status_code == 200, response.get_json()
    result = response.get_json()["results"][0]
    return result["allowed"], result["reason"]


def bulk_check_by_email(surfaces, token, purpose):
    return _bulk_check(surfaces, purpose, "emails", PERSON_EMAIL)


def bulk_check_by_user_id(surfaces, token, purpose):
    return _bulk_check(surfaces, purpose, "user_ids", PERSON_USER_ID)


def export(surfaces, token, purpose):
    response = surfaces.flask.get(
        "/v1/server/subjects/export",
        query_string={"visitor_token": token["X-Consent-Token"]},
        headers=surfaces.key,
    )
    assert response.status_code == 200, response.get_json()
    state = response.get_json()["state"][purpose]
    return state["allowed"], state["reason"]


def visitor_state(surfaces, token, purpose):
    response = surfaces.flask.get(f"/v1/sites/{surfaces.site}/me", headers={**token, **CALIFORNIA})
    assert response.status_code == 200, response.get_json()
    state = response.get_json()["state"][purpose]
    return state["allowed"], state["reason"]


def suppression_list(surfaces, token, purpose):
    """Listed with its reason when not allowed; an allowed person is not listed."""
    response = surfaces.flask.get(
        "/v1/server/suppression", query_string={"purpose": purpose}, headers=surfaces.key
    )
    assert response.status_code == 200, response.get_json()
    listed = [item for item in response.get_json()["items"] if item["email"] == PERSON_EMAIL]
    return (False, listed[0]["reason"]) if listed else (True, "granted or required")


CALLERS = [
    public_check,
    public_check_fast_path,
    server_check_by_user_id,
    server_check_by_email,
    server_check_by_visitor_token,
    bulk_check_by_email,
    bulk_check_by_user_id,
    export,
    visitor_state,
    suppression_list,
]
#: What a caller cannot be asked: a purpose the site lacks is a 422 to a list (bulk
#: check, suppression) and has no entry in a person's state; an erased person is no
#: longer listed for suppression (nothing identifies them any more).
NOT_ASKED = {
    (state, caller)
    for state in ["unknown"]
    for caller in [bulk_check_by_email, bulk_check_by_user_id, export, visitor_state]
} | {("unknown", suppression_list), ("erased", suppression_list)}
#: The export and the suppression list know no region (they answer as opt-in), and the
#: bulk check (marketing's, server to server) no browser signal.
NOT_ASKED |= {
    (state, caller)
    for state in STATES
    if state.startswith("opt_out")
    for caller in [export, suppression_list]
} | {("opt_out_under_gpc", bulk_check_by_email), ("opt_out_under_gpc", bulk_check_by_user_id)}


def _expected(state: str, caller) -> tuple[bool, str]:
    answer = STATES[state][1]
    if caller is suppression_list and answer[0]:
        return True, "granted or required"
    return answer


class Surfaces:
    """The service twice on one database: Flask only, and as shipped (fast path on)."""

    def __init__(self, app_with, site: str, key: str) -> None:
        self.site = site
        self.check_url = f"/v1/sites/{site}/check"
        self.key = bearer(key)
        self.flask = app_with(FAST_CHECK=False, **HIGH_LIMITS, **REGION_HEADERS).test_client()
        fast_app = app_with(**HIGH_LIMITS, **REGION_HEADERS)
        self.flask_dispatches: list[str] = []
        fast_app.before_request(lambda: self.flask_dispatches.append("flask"))
        self.fast = fast_app.test_client()


@pytest.mark.parametrize(
    ("state", "caller"),
    [
        pytest.param(state, caller, id=f"{state}-{caller.__name__}")
        for state in STATES
        for caller in CALLERS
        if (state, caller) not in NOT_ASKED
    ],
)
def test_every_caller_answers_alike(
    client, runner, make_site, make_key, app_with, monkeypatch, state, caller
):
    site = make_site(lifetime_days=LIFETIME_DAYS, retention_days=2 * LIFETIME_DAYS)
    key = make_key(site, "read", "write", "rights")
    arrange, _ = STATES[state]
    token, purpose = arrange(client, runner, site, key, monkeypatch)
    surfaces = Surfaces(app_with, site, key)
    assert caller(surfaces, {"X-Consent-Token": token}, purpose) == _expected(state, caller)


@pytest.mark.parametrize("reason", list(consent.decision.Reason))
@pytest.mark.parametrize("service", [None, "ga4"])
def test_the_check_answers_as_its_schema_documents_it(app, reason, service):
    """The check's body is built by hand for speed; it is what ``CheckSchema`` dumps."""
    from datetime import UTC, datetime

    from consent.api.common import check_answer
    from consent.check import VisitorCheck
    from consent.schemas import CheckSchema

    decided = datetime(2026, 12, 3, 12, 30, 5, 123456, tzinfo=UTC)
    for when in [(None, None), (decided, decided + timedelta(days=LIFETIME_DAYS))]:
        verdict = consent.decision.Verdict(reason.value.startswith("g"), reason, *when)
        args = {"purpose": "analytics", **({"service": service} if service else {})}
        with app.test_request_context():
            body, _ = check_answer(VisitorCheck([], verdict), args, None, "http://localhost/")
            assert app.json.dumps(body) == app.json.dumps(
                CheckSchema().dump(verdict.body("analytics", service))
            )
