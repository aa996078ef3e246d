"""consent.client.ConsentClient against the real app, over real HTTP."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from helpers import ACCEPT_ALL, submit
from werkzeug.serving import make_server

from consent.client import (
    CheckResult,
    ConsentClient,
    Forbidden,
    InvalidRequest,
    NotFound,
    Unauthorized,
)

OPT_IN = [{"purpose": "email_marketing", "granted": True}]


@pytest.fixture
def base_url(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


@pytest.fixture
def consent(base_url, demo_site, make_key):
    with ConsentClient(base_url, make_key(demo_site, "read", "write", "rights")) as client:
        yield client


def test_record_then_check_by_user_id(consent):
    consent.record(ACCEPT_ALL, user_id="user-42")
    answer = consent.check("analytics", user_id="user-42")
    assert isinstance(answer, CheckResult)
    assert (answer.allowed, answer.reason) == (True, "granted")
    assert answer.expires_at > answer.decided_at


def test_bulk_check_and_unsubscribe_links(consent):
    consent.record(OPT_IN, email="in@example.com")
    results = consent.bulk_check("email_marketing", emails=["in@example.com", "no@example.com"])
    assert {row["email"]: row["allowed"] for row in results} == {
        "in@example.com": True,
        "no@example.com": False,
    }
    [link] = consent.unsubscribe_links("email_marketing", ["in@example.com"])
    assert link["headers"]["List-Unsubscribe"] == f"<{link['url']}>"


def test_link_export_and_erase(consent, client, demo_site):
    token = submit(client, demo_site, ACCEPT_ALL).get_json()["visitor_token"]
    consent.link(token, "user-7")
    export = consent.export(user_id="user-7")
    assert export["subject"]["user_id"] == "user-7"
    assert consent.erase(user_id="user-7")["erased"] is True
    assert consent.check("analytics", visitor_token=token).reason == "erased"


def test_a_refused_field_is_named(consent):
    with pytest.raises(InvalidRequest) as refused:
        consent.record([{"purpose": "nope", "granted": True}], user_id="user-1")
    assert refused.value.status == 422
    assert "decisions.0.purpose" in refused.value.errors


@pytest.mark.parametrize(
    ("key", "error"), [("ck_000000000000.wrong", Unauthorized), ("read-only", Forbidden)]
)
def test_key_problems_raise_their_own_error(base_url, demo_site, make_key, key, error):
    secret = make_key(demo_site, "read") if key == "read-only" else key
    with ConsentClient(base_url, secret) as read_only, pytest.raises(error):
        read_only.record(ACCEPT_ALL, user_id="user-1")


def test_an_unknown_person_is_not_found(consent):
    with pytest.raises(NotFound):
        consent.erase(email="nobody@example.com")


class LosingFirstAnswers:
    """A real HTTP hop in front of the app that loses the first answers to POSTs (503).

    The app has done the work; only its answer is lost, as when a proxy times out.
    """

    def __init__(self, upstream: str, losses: int) -> None:
        self.losses = losses
        self.keys: list[str] = []
        hop = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                hop.keys.append(self.headers.get("Idempotency-Key"))
                answer = httpx.post(upstream + self.path, content=body, headers=headers)
                if hop.losses:
                    hop.losses -= 1
                    status, content = 503, b'{"error":"service_unavailable","message":"lost"}'
                else:
                    status, content = answer.status_code, answer.content
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Retry-After", "0")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_a_lost_answer_is_retried_with_the_same_key_and_records_once(
    base_url, demo_site, make_key, record_count
):
    hop = LosingFirstAnswers(base_url, losses=2)
    try:
        with ConsentClient(hop.url, make_key(demo_site, "write")) as consent:
            before = record_count()
            answer = consent.record(ACCEPT_ALL, user_id="user-9")
    finally:
        hop.server.shutdown()
        hop.server.server_close()
    assert answer["record"]["sequence"] >= 1
    assert len(hop.keys) == 3 and len(set(hop.keys)) == 1
    assert record_count() - before == 1


def test_a_record_for_a_user_attaches_the_email_in_the_same_call(consent):
    consent.record(OPT_IN, user_id="user-5", email="five@example.com")
    by_email = consent.check("email_marketing", email="five@example.com")
    by_user = consent.check("email_marketing", user_id="user-5")
    assert (by_email.allowed, by_user.allowed) == (True, True)


def test_a_user_id_and_an_email_of_two_people_are_refused(consent):
    consent.record(OPT_IN, user_id="user-5")
    consent.record(OPT_IN, email="other@example.com")
    with pytest.raises(InvalidRequest) as refused:
        consent.record(OPT_IN, user_id="user-5", email="other@example.com")
    assert list(refused.value.errors) == ["email"]


def test_an_email_recorded_first_gets_the_user_id(consent):
    consent.record(OPT_IN, email="early@example.com")
    consent.record(
        [{"purpose": "analytics", "granted": True}], user_id="u-8", email="early@example.com"
    )
    assert consent.check("email_marketing", user_id="u-8").allowed is True


def test_a_rights_request_for_a_known_person_starts_verified(consent):
    consent.record(OPT_IN, email="grace@example.com")
    receipt = consent.rights_request("export", email="grace@example.com")
    assert receipt["kind"] == "export" and receipt["state"] == "verified"
    assert receipt["reference"] and receipt["due_at"]
