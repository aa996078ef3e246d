"""Marketing: who may be contacted, the suppression list, one-click unsubscribe."""

from __future__ import annotations

import csv
import io
import re

import pytest
from helpers import bearer

OPT_IN = [{"purpose": "email_marketing", "granted": True}]
OPT_OUT = [{"purpose": "email_marketing", "granted": False}]


@pytest.fixture
def server(client, demo_site, make_key):
    """A server API caller with every scope on the demo site."""
    secret = make_key(demo_site, "read", "write", "rights")

    def call(method, url, **kwargs):
        return getattr(client, method)(url, headers=bearer(secret), **kwargs)

    return call


def opt(server, email, decisions):
    response = server("post", "/v1/server/records", json={"email": email, "decisions": decisions})
    assert response.status_code == 201, response.get_json()


def bulk(server, emails):
    response = server(
        "post", "/v1/server/bulk-check", json={"purpose": "email_marketing", "emails": emails}
    )
    assert response.status_code == 200, response.get_json()
    return {row["email"]: row["reason"] for row in response.get_json()["results"]}


def link_for(server, email):
    response = server(
        "post",
        "/v1/server/unsubscribe-links",
        json={"purpose": "email_marketing", "emails": [email]},
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()["links"][0]


def test_bulk_check_allows_only_explicit_opt_ins(server):
    opt(server, "in@example.com", OPT_IN)
    opt(server, "out@example.com", OPT_IN)
    opt(server, "out@example.com", OPT_OUT)
    assert bulk(server, ["in@example.com", "out@example.com", "never@example.com", "bad"]) == {
        "in@example.com": "granted",
        "out@example.com": "withdrawn",
        "never@example.com": "no_decision",
        "bad": "invalid",
    }


def test_bulk_check_answers_ten_thousand_in_order(server):
    opt(server, "person7@example.com", OPT_IN)
    emails = [f"person{i}@example.com" for i in range(10_000)]
    response = server(
        "post", "/v1/server/bulk-check", json={"purpose": "email_marketing", "emails": emails}
    )
    body = response.get_json()
    assert [row["email"] for row in body["results"]] == emails
    assert body["allowed_count"] == 1
    assert body["results"][7]["allowed"] is True


def test_bulk_check_of_a_required_purpose_answers_as_the_single_check(server, client):
    opt(server, "known@example.com", OPT_IN)
    response = server(
        "post",
        "/v1/server/bulk-check",
        json={"purpose": "necessary", "emails": ["known@example.com", "new@example.com", "bad"]},
    )
    assert [(row["allowed"], row["reason"]) for row in response.get_json()["results"]] == [
        (True, "required"),
        (True, "required"),
        (False, "invalid"),
    ]
    single = server(
        "get", "/v1/server/check", query_string={"purpose": "necessary", "email": "new@example.com"}
    )
    assert (single.get_json()["allowed"], single.get_json()["reason"]) == (True, "required")


def test_bulk_check_refuses_more_than_ten_thousand(server):
    emails = [f"p{i}@example.com" for i in range(10_001)]
    response = server(
        "post", "/v1/server/bulk-check", json={"purpose": "email_marketing", "emails": emails}
    )
    assert response.status_code == 422
    assert "emails" in response.get_json()["errors"]


def test_bulk_check_of_unknown_purpose_is_refused(server):
    response = server(
        "post", "/v1/server/bulk-check", json={"purpose": "pigeons", "emails": ["a@example.com"]}
    )
    assert response.status_code == 422
    assert "purpose" in response.get_json()["errors"]


def test_suppression_list_pages_as_json(server):
    for index in range(5):
        opt(server, f"out{index}@example.com", OPT_OUT)
    opt(server, "in@example.com", OPT_IN)
    first = server(
        "get", "/v1/server/suppression", query_string={"purpose": "email_marketing", "limit": 3}
    ).get_json()
    assert len(first["items"]) == 3 and first["next_after"]
    second = server(
        "get",
        "/v1/server/suppression",
        query_string={"purpose": "email_marketing", "limit": 3, "after": first["next_after"]},
    ).get_json()
    emails = {item["email"] for item in first["items"] + second["items"]}
    assert emails == {f"out{index}@example.com" for index in range(5)}
    assert second["next_after"] is None


def test_suppression_list_streams_as_csv(server):
    opt(server, "out@example.com", OPT_OUT)
    opt(server, "in@example.com", OPT_IN)
    response = server(
        "get",
        "/v1/server/suppression",
        query_string={"purpose": "email_marketing", "format": "csv"},
    )
    assert response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [(row["email"], row["reason"]) for row in rows] == [("out@example.com", "denied")]


class TestInProductionContexts:
    """Each request in its own app context, as in production, where a streamed body is
    sent after the request's database session has closed."""

    @pytest.fixture(autouse=True)
    def _push_request_context(self):
        """Override pytest-flask's one app context for the whole test."""

    def test_suppression_list_streams_as_csv(self, server):
        opt(server, "out@example.com", OPT_OUT)
        response = server(
            "get",
            "/v1/server/suppression",
            query_string={"purpose": "email_marketing", "format": "csv"},
        )
        rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
        assert [(row["email"], row["reason"]) for row in rows] == [("out@example.com", "denied")]


def test_unsubscribe_link_carries_rfc8058_headers(server):
    link = link_for(server, "reader@example.com")
    assert link["headers"]["List-Unsubscribe"] == f"<{link['url']}>"
    assert link["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "reader" not in link["url"]


def test_unsubscribe_get_changes_nothing(client, server, record_count):
    opt(server, "reader@example.com", OPT_IN)
    link = link_for(server, "reader@example.com")
    before = record_count()
    page = client.get(link["url"])
    assert page.status_code == 200
    assert b'<form method="post"' in page.data
    assert record_count() == before
    assert bulk(server, ["reader@example.com"])["reader@example.com"] == "granted"


@pytest.mark.parametrize("encoding", ["form", "multipart"])
def test_one_click_post_withdraws_at_once(client, server, encoding):
    opt(server, "reader@example.com", OPT_IN)
    link = link_for(server, "reader@example.com")
    data = {"List-Unsubscribe": "One-Click"}
    response = client.post(
        link["url"],
        data=data,
        content_type="multipart/form-data" if encoding == "multipart" else None,
    )
    assert response.status_code == 200
    assert "Location" not in response.headers
    assert bulk(server, ["reader@example.com"])["reader@example.com"] == "withdrawn"


def test_unsubscribe_is_recorded_with_its_source(client, server):
    opt(server, "reader@example.com", OPT_IN)
    client.post(
        link_for(server, "reader@example.com")["url"], data={"List-Unsubscribe": "One-Click"}
    )
    export = server(
        "get", "/v1/server/subjects/export", query_string={"email": "reader@example.com"}
    ).get_json()
    assert export["history"][-1]["source"] == "unsubscribe"
    assert export["history"][-1]["decisions"] == OPT_OUT


def test_repeated_unsubscribe_is_harmless(client, server, record_count):
    opt(server, "reader@example.com", OPT_IN)
    url = link_for(server, "reader@example.com")["url"]
    client.post(url, data={"List-Unsubscribe": "One-Click"})
    after_first = record_count()
    second = client.post(url, data={"List-Unsubscribe": "One-Click"})
    assert second.status_code == 200
    assert record_count() == after_first


def test_tampered_link_gets_the_same_answer_and_records_nothing(client, server, record_count):
    opt(server, "reader@example.com", OPT_IN)
    url = link_for(server, "reader@example.com")["url"]
    tampered = url[:-3] + ("aaa" if not url.endswith("aaa") else "bbb")
    before = record_count()
    # The genuine link shows the person's preferences; a tampered one the neutral page.
    assert client.get(tampered).data == client.get("/unsubscribe/not-a-link").data
    response = client.post(tampered, data={"List-Unsubscribe": "One-Click"})
    valid = client.post(url, data={"List-Unsubscribe": "One-Click"})
    assert (response.status_code, response.data) == (valid.status_code, valid.data)
    assert record_count() == before + 1  # only the genuine one


def test_unsubscribe_token_for_visitors_is_not_an_unsubscribe_link(client, demo_site, server):
    from helpers import ACCEPT_ALL, submit

    visitor_token = submit(client, demo_site, ACCEPT_ALL).get_json()["visitor_token"]
    response = client.post(f"/unsubscribe/{visitor_token}", data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert re.search(rb"unsubscribed", response.data)
