"""Model-based test: random sequences of what people and sites do, against a small model.

Hypothesis drives grants, withdrawals, GPC submissions, policy changes, links to a user
id, attached emails, erasures and forgotten cookies, through the HTTP API and the CLI.
After every step every check (by visitor, user id and email, for every purpose) must
answer what the model says, and the site's chain must verify with one record per write.

CI runs a bounded, derandomised set; ``CONSENT_MODEL_EXAMPLES=500`` explores longer, at
random.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field

from helpers import bearer
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select

from consent.chain import verify_chain
from consent.db import db
from consent.keys import issue_key
from consent.models import ConsentRecord
from consent.sites import STANDARD_PURPOSES, create_site, get_site_by_key, set_purpose

EXAMPLES = int(os.environ.get("CONSENT_MODEL_EXAMPLES", "0"))
SETTINGS = settings(
    max_examples=EXAMPLES or 25,
    stateful_step_count=50 if EXAMPLES else 20,
    derandomize=not EXAMPLES,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

OPTIONAL = ("preferences", "analytics", "marketing")
PURPOSES = ("necessary", *OPTIONAL)
BROWSERS = 2
USERS = ("user-a", "user-b")
EMAILS = ("ada@example.com", "bob@example.com")

decisions = st.dictionaries(st.sampled_from(OPTIONAL), st.booleans(), min_size=1)
browsers = st.integers(0, BROWSERS - 1)


@dataclass
class Decision:
    granted: bool
    is_withdrawal: bool
    #: Which policy it was taken under, and when (the model's clock: one tick per record).
    policy: int
    decided: int


@dataclass(eq=False)
class Person:
    """A subject as the model sees it."""

    states: dict[str, Decision] = field(default_factory=dict)
    is_erased: bool = False
    user_id: str | None = None
    email: str | None = None


@dataclass
class Browser:
    token: str | None = None
    person: Person | None = None


class ConsentModel(RuleBasedStateMachine):
    """One fresh site per example; the database is shared and never reset."""

    app = None  # set by the test
    examples = steps = 0

    def __init__(self):
        super().__init__()
        type(self).examples += 1
        self.client = self.app.test_client()
        with self.app.app_context():
            site = create_site(f"model-{uuid.uuid4().hex[:10]}", "Model site")
            for position, purpose in enumerate(STANDARD_PURPOSES):
                set_purpose(
                    site,
                    purpose["key"],
                    position=position,
                    **{k: v for k, v in purpose.items() if k != "key"},
                )
            _, secret = issue_key(site, "model", ["read", "write", "rights"])
            db.session.commit()
            self.site = site.key
        self.key = bearer(secret)
        self.browsers = [Browser() for _ in range(BROWSERS)]
        self.users: dict[str, Person] = {}
        self.emails: dict[str, Person] = {}
        self.erased_identifiers: set[str] = set()
        self.policies = 0
        self.latest_material = 0
        self.records = 0

    # --- what people and sites do --------------------------------------------------

    def _submit(self, number: int, choices: dict[str, bool], *, is_gpc: bool):
        browser = self.browsers[number]
        headers = {"Sec-GPC": "1"} if is_gpc else {}
        if browser.token:
            headers["X-Consent-Token"] = browser.token
        body = {"decisions": [{"purpose": p, "granted": g} for p, g in sorted(choices.items())]}
        if is_gpc:
            # Under GPC a marketing grant stands only as a choice made one by one.
            body["source"] = "preferences"
        response = self.client.post(f"/v1/sites/{self.site}/records", json=body, headers=headers)
        assert response.status_code == 201, response.get_json()
        answer = response.get_json()
        assert answer["record"]["gpc"] is is_gpc
        assert answer["record"]["source"] == ("preferences" if is_gpc else "banner")
        if browser.person is None or browser.person.is_erased:
            browser.person = Person()  # a new visitor: the old one, if any, was erased
        browser.token = answer["visitor_token"]
        self.records += 1
        for purpose, granted in choices.items():
            before = browser.person.states.get(purpose)
            browser.person.states[purpose] = Decision(
                granted,
                not granted and before is not None and (before.granted or before.is_withdrawal),
                self.policies,
                self.records,
            )

    @initialize(first=decisions, second=decisions)
    def both_browsers_decide(self, first, second):
        """Start where people are: each browser has made a choice (links need one)."""
        self._submit(0, first, is_gpc=False)
        self._submit(1, second, is_gpc=False)

    @rule(number=browsers, choices=decisions)
    def decide(self, number, choices):
        self._submit(number, choices, is_gpc=False)

    @rule(number=browsers, purpose=st.sampled_from(OPTIONAL))
    def withdraw(self, number, purpose):
        self._submit(number, {purpose: False}, is_gpc=False)

    @rule(number=browsers, choices=decisions)
    def send_gpc(self, number, choices):
        """The widget with Global Privacy Control on: marketing is refused."""
        self._submit(number, {**choices, "marketing": False}, is_gpc=True)

    @rule(is_material=st.booleans())
    def publish_policy(self, is_material):
        self.policies += 1
        args = ["add-policy", self.site, f"v{self.policies}"]
        result = self.app.test_cli_runner().invoke(
            args=args + (["--material"] if is_material else [])
        )
        assert result.exit_code == 0, result.output
        if is_material:
            self.latest_material = self.policies

    @rule(number=browsers, user_id=st.sampled_from(USERS))
    def link_user(self, number, user_id):
        browser = self.browsers[number]
        if browser.token is None:
            return
        response = self.client.post(
            "/v1/server/links",
            headers=self.key,
            json={"visitor_token": browser.token, "user_id": user_id},
        )
        assert response.status_code == 201, response.get_json()
        self.records += 1
        previous, target = browser.person, self.users.get(user_id)
        if target is None:
            if previous.user_id is None and not previous.is_erased:
                previous.user_id = user_id
                self.users[user_id] = previous
                return
            target = self.users[user_id] = Person(user_id=user_id)
        if target is previous:
            return
        for purpose, decision in previous.states.items():  # the newer decision wins
            mine = target.states.get(purpose)
            if mine is None or mine.decided < decision.decided:
                target.states[purpose] = decision
        browser.person = target

    @rule(number=browsers, email=st.sampled_from(EMAILS))
    def attach_email(self, number, email):
        browser = self.browsers[number]
        if browser.token is None:
            return
        response = self.client.post(
            "/v1/server/subjects/correct",
            headers=self.key,
            json={"visitor_token": browser.token, "field": "email", "value": email},
        )
        person, owner = browser.person, self.emails.get(email)
        if person.is_erased or (owner is not None and owner is not person):
            assert response.status_code == 409, response.get_json()
            return
        assert response.status_code == 200, response.get_json()
        self.records += 1
        self.emails.pop(person.email, None)
        person.email = email
        self.emails[email] = person

    @rule(number=browsers)
    def erase_by_visitor(self, number):
        browser = self.browsers[number]
        if browser.token is None:
            return
        response = self.client.post(
            "/v1/server/subjects/erase", headers=self.key, json={"visitor_token": browser.token}
        )
        assert response.status_code == 200, response.get_json()
        self._erase(browser.person)

    @rule(user_id=st.sampled_from(USERS))
    def erase_by_user_id(self, user_id):
        response = self.client.post(
            "/v1/server/subjects/erase", headers=self.key, json={"user_id": user_id}
        )
        if user_id not in self.users:
            assert response.status_code == 404, response.get_json()
            return
        assert response.status_code == 200, response.get_json()
        self._erase(self.users[user_id])

    def _erase(self, person: Person) -> None:
        if person.is_erased:
            return  # erasing twice appends nothing
        self.records += 1
        person.is_erased = True
        person.states.clear()
        for identifier, index in ((person.user_id, self.users), (person.email, self.emails)):
            if identifier is not None:
                del index[identifier]
                self.erased_identifiers.add(identifier)
        person.user_id = person.email = None

    @rule(number=browsers)
    def clear_cookies(self, number):
        """The browser forgets its token: its next choice starts a new visitor."""
        self.browsers[number] = Browser()

    # --- what must hold after every step -------------------------------------------

    def expected(self, person: Person | None, purpose: str, identifier: str | None = None):
        if purpose == "necessary":
            return True, "required"
        if person is None:
            return False, "erased" if identifier in self.erased_identifiers else "no_decision"
        if person.is_erased:
            return False, "erased"
        decision = person.states.get(purpose)
        if decision is None:
            return False, "no_decision"
        if decision.policy < self.latest_material:
            return False, "stale_policy"
        if not decision.granted:
            return False, "withdrawn" if decision.is_withdrawal else "denied"
        return True, "granted"

    @invariant()
    def every_check_agrees_with_the_model(self):
        steps = type(self).steps = type(self).steps + 1
        for number, browser in enumerate(self.browsers):
            headers = {"X-Consent-Token": browser.token} if browser.token else {}
            # "necessary" is always allowed: asking once in a while is enough.
            for purpose in OPTIONAL if steps % 4 else PURPOSES:
                answer = self.client.get(
                    f"/v1/sites/{self.site}/check",
                    headers=headers,
                    query_string={"purpose": purpose},
                ).get_json()
                assert (answer["allowed"], answer["reason"]) == self.expected(
                    browser.person, purpose
                ), (f"browser {number}", purpose)
        # By user id and email: one purpose per step in turn, and only the identifiers
        # in use but every fourth step (every request costs).
        purpose = OPTIONAL[steps % len(OPTIONAL)]
        for kind, people, identifiers in (
            ("user_id", self.users, USERS),
            ("email", self.emails, EMAILS),
        ):
            for identifier in identifiers:
                in_use = identifier in people or identifier in self.erased_identifiers
                if steps % 4 and not in_use:
                    continue
                answer = self.client.get(
                    "/v1/server/check",
                    headers=self.key,
                    query_string={"purpose": purpose, kind: identifier},
                ).get_json()
                expected = self.expected(people.get(identifier), purpose, identifier)
                assert (answer["allowed"], answer["reason"]) == expected, (identifier, purpose)

    @invariant()
    def the_chain_verifies_with_one_record_per_write(self):
        with self.app.app_context():
            site = get_site_by_key(self.site)
            report = verify_chain(site)
            count = db.session.scalar(select(func.count()).where(ConsentRecord.site_id == site.id))
        assert report.is_intact, report
        assert count == self.records


def test_the_service_behaves_like_its_model(app, dialect, tally):
    class OnThisDatabase(ConsentModel):
        pass

    OnThisDatabase.app = app
    run_state_machine_as_test(OnThisDatabase, settings=SETTINGS)
    tally[f"model[{dialect}]: examples"] += OnThisDatabase.examples
    tally[f"model[{dialect}]: steps checked"] += OnThisDatabase.steps
