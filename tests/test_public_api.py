"""The public API, end to end through the test client, as the widget uses it."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from helpers import ACCEPT_ALL, REJECT_ALL, check, submit
from sqlalchemy import select

import consent.chain
import consent.check
from consent.db import db
from consent.models import IdempotentRequest


def test_first_submission_issues_a_visitor_token(client, make_site):
    site = make_site()
    response = submit(client, site, ACCEPT_ALL)
    assert response.status_code == 201
    body = response.get_json()
    assert body["visitor_token"] and body["visitor_id"]
    assert body["record"]["sequence"] == 1
    assert [d["purpose"] for d in body["record"]["decisions"]] == [
        "analytics",
        "marketing",
        "preferences",
    ]


def test_accepted_purpose_is_allowed(client, make_site):
    site = make_site()
    token = submit(client, site, ACCEPT_ALL).get_json()["visitor_token"]
    body = check(client, site, "analytics", token=token).get_json()
    assert body["allowed"] is True
    assert body["reason"] == "granted"
    assert body["decided_at"] is not None


def test_refused_purpose_is_denied(client, make_site):
    site = make_site()
    token = submit(client, site, REJECT_ALL).get_json()["visitor_token"]
    body = check(client, site, "marketing", token=token).get_json()
    assert (body["allowed"], body["reason"]) == (False, "denied")


def test_withdrawal_makes_check_deny(client, make_site):
    site = make_site()
    token = submit(client, site, ACCEPT_ALL).get_json()["visitor_token"]
    submit(client, site, [{"purpose": "analytics", "granted": False}], token=token)
    body = check(client, site, "analytics", token=token).get_json()
    assert (body["allowed"], body["reason"]) == (False, "withdrawn")
    assert check(client, site, "marketing", token=token).get_json()["allowed"] is True


def test_unknown_visitor_has_no_decision(client, make_site):
    site = make_site()
    body = check(client, site, "analytics").get_json()
    assert (body["allowed"], body["reason"]) == (False, "no_decision")


def test_required_purpose_is_always_allowed(client, make_site):
    site = make_site()
    body = check(client, site, "necessary").get_json()
    assert (body["allowed"], body["reason"]) == (True, "required")


def test_unknown_purpose_is_not_allowed(client, make_site):
    site = make_site()
    token = submit(client, site, ACCEPT_ALL).get_json()["visitor_token"]
    body = check(client, site, "telepathy", token=token).get_json()
    assert (body["allowed"], body["reason"]) == (False, "unknown_purpose")


def test_check_is_never_cached(client, make_site):
    site = make_site()
    response = check(client, site, "analytics")
    assert response.headers["Cache-Control"] == "no-store"


def test_expired_decision_is_not_allowed(client, make_site, monkeypatch):
    site = make_site(lifetime_days=30, retention_days=60)
    long_ago = consent.chain.now_utc() - timedelta(days=31)
    monkeypatch.setattr(consent.chain, "now_utc", lambda: long_ago)
    token = submit(client, site, ACCEPT_ALL).get_json()["visitor_token"]
    monkeypatch.undo()
    body = check(client, site, "analytics", token=token).get_json()
    assert (body["allowed"], body["reason"]) == (False, "expired")


def test_material_policy_change_makes_decision_stale(client, runner, make_site):
    site = make_site()
    token = submit(client, site, ACCEPT_ALL).get_json()["visitor_token"]
    result = runner.invoke(args=["add-policy", site, "v2", "--material"])
    assert result.exit_code == 0, result.output
    body = check(client, site, "analytics", token=token).get_json()
    assert (body["allowed"], body["reason"]) == (False, "stale_policy")
    assert check(client, site, "necessary", token=token).get_json()["allowed"] is True


def test_minor_policy_change_keeps_decision(client, runner, make_site):
    site = make_site()
    token = submit(client, site, ACCEPT_ALL).get_json()["visitor_token"]
    runner.invoke(args=["add-policy", site, "v1.1", "--not-material"])
    assert check(client, site, "analytics", token=token).get_json()["allowed"] is True


def test_decision_under_new_material_policy_is_allowed(client, runner, make_site):
    site = make_site()
    token = submit(client, site, ACCEPT_ALL).get_json()["visitor_token"]
    runner.invoke(args=["add-policy", site, "v2", "--material"])
    submit(client, site, ACCEPT_ALL, token=token)
    assert check(client, site, "analytics", token=token).get_json()["allowed"] is True


def test_scheduled_policy_is_announced_and_counts_from_its_time(
    client, runner, make_site, monkeypatch
):
    site = make_site()
    token = submit(client, site, ACCEPT_ALL).get_json()["visitor_token"]
    effective_at = consent.chain.now_utc().replace(microsecond=0) + timedelta(days=2)
    result = runner.invoke(
        args=[
            "add-policy",
            site,
            "v2",
            "--material",
            "--effective-at",
            f"{effective_at:%Y-%m-%d %H:%M:%S}",
        ]
    )
    assert result.exit_code == 0, result.output
    config = client.get(f"/v1/sites/{site}/config").get_json()
    assert config["policy"]["version"] == "v1"
    assert [(p["version"], p["published_at"]) for p in config["scheduled_policies"]] == [
        ("v2", effective_at.isoformat())
    ]
    assert check(client, site, "analytics", token=token).get_json()["allowed"] is True

    for moment, allowed in ((effective_at - timedelta(seconds=1), True), (effective_at, False)):
        monkeypatch.setattr(consent.check, "now_utc", lambda moment=moment: moment)
        body = check(client, site, "analytics", token=token).get_json()
        assert (body["allowed"], body["reason"]) == (
            (True, "granted") if allowed else (False, "stale_policy")
        )


def test_service_refused_inside_granted_purpose(client, demo_site):
    decisions = [{"purpose": "analytics", "granted": True, "services": {"matomo": False}}]
    token = submit(client, demo_site, decisions).get_json()["visitor_token"]
    assert check(client, demo_site, "analytics", token=token).get_json()["allowed"] is True
    service = check(client, demo_site, "analytics", token=token, service="matomo").get_json()
    assert (service["allowed"], service["reason"]) == (False, "denied")


def test_purpose_decision_replaces_earlier_service_choice(client, demo_site):
    decisions = [{"purpose": "analytics", "granted": True, "services": {"matomo": False}}]
    token = submit(client, demo_site, decisions).get_json()["visitor_token"]
    submit(client, demo_site, [{"purpose": "analytics", "granted": True}], token=token)
    service = check(client, demo_site, "analytics", token=token, service="matomo").get_json()
    assert service["allowed"] is True


def test_unknown_service_check_is_not_allowed(client, demo_site):
    body = check(client, demo_site, "analytics", service="nothing").get_json()
    assert (body["allowed"], body["reason"]) == (False, "unknown_purpose")


def test_visitor_reads_own_state_and_history(client, make_site):
    site = make_site()
    token = submit(client, site, ACCEPT_ALL).get_json()["visitor_token"]
    submit(client, site, [{"purpose": "marketing", "granted": False}], token=token)
    body = client.get(f"/v1/sites/{site}/me", headers={"X-Consent-Token": token}).get_json()
    assert body["state"]["analytics"]["allowed"] is True
    assert body["state"]["marketing"]["reason"] == "withdrawn"
    assert body["state"]["necessary"]["reason"] == "required"
    assert [record["sequence"] for record in body["history"]] == [2, 1]


def test_own_history_needs_a_token(client, make_site):
    site = make_site()
    response = client.get(f"/v1/sites/{site}/me")
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"


def test_tampered_token_is_refused(client, make_site, record_count):
    site = make_site()
    token = submit(client, site, ACCEPT_ALL).get_json()["visitor_token"]
    response = submit(client, site, REJECT_ALL, token=token[:-2] + "xx")
    assert response.status_code == 401
    assert record_count() == 1


def test_other_sites_token_is_refused(client, make_site, record_count):
    site, other = make_site(), make_site()
    token = submit(client, site, ACCEPT_ALL).get_json()["visitor_token"]
    response = submit(client, other, ACCEPT_ALL, token=token)
    assert response.status_code == 403
    assert check(client, other, "analytics", token=token).status_code == 403
    assert record_count() == 1


@pytest.mark.parametrize("fast", [True, False], ids=["fast path", "flask"])
def test_a_token_already_checked_is_refused_once_the_secret_changes(
    client, app_with, make_site, fast
):
    site = make_site()
    token = submit(client, site, ACCEPT_ALL).get_json()["visitor_token"]
    # This process has checked the token (and keeps that it did)...
    assert check(client, site, "analytics", token=token).get_json()["allowed"] is True
    # ...which an app with another secret, in the same process, does not take.
    rotated = app_with(SECRET_KEY="another-secret-" + "r" * 32, FAST_CHECK=fast).test_client()
    assert check(rotated, site, "analytics", token=token).status_code == 401
    assert check(client, site, "analytics", token=token).status_code == 200


def test_retried_submission_with_idempotency_key_records_once(client, make_site, record_count):
    site = make_site()
    headers = {"Idempotency-Key": "6b1a1f9e-retry-0001"}
    first = submit(client, site, ACCEPT_ALL, headers=headers)
    second = submit(client, site, ACCEPT_ALL, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.get_json() == first.get_json()
    assert record_count() == 1


def test_idempotency_key_is_stored_as_its_digest(app, client, make_site):
    site = make_site()
    key = "6b1a1f9e-kept-as-digest"
    assert submit(client, site, ACCEPT_ALL, headers={"Idempotency-Key": key}).status_code == 201
    with app.app_context():
        stored = db.session.scalars(select(IdempotentRequest.key)).all()
    assert stored == [hashlib.sha256(key.encode()).hexdigest()]


def test_reused_idempotency_key_with_other_body_is_refused(client, make_site, record_count):
    site = make_site()
    headers = {"Idempotency-Key": "same-key-5d2c8e1f"}
    submit(client, site, ACCEPT_ALL, headers=headers)
    response = submit(client, site, REJECT_ALL, headers=headers)
    assert response.status_code == 422
    assert "Idempotency-Key" in response.get_json()["errors"]
    assert record_count() == 1


def test_gpc_header_is_recorded_with_the_real_source(client, make_site):
    site = make_site()
    response = submit(client, site, REJECT_ALL, headers={"Sec-GPC": "1"})
    record = response.get_json()["record"]
    assert (record["gpc"], record["source"]) == (True, "banner")


@pytest.mark.parametrize("source", ["api", "import", "gpc", "unsubscribe"])
def test_a_browser_cannot_claim_a_source_it_is_not(client, make_site, record_count, source):
    response = submit(client, make_site(), REJECT_ALL, source=source)
    assert response.status_code == 422
    assert "source" in response.get_json()["errors"]
    assert record_count() == 0


@pytest.mark.parametrize(
    ("source", "status"),
    [("banner", 422), (None, 422), ("preferences", 201)],
)
def test_under_gpc_marketing_is_granted_only_from_the_preference_centre(
    client, make_site, record_count, source, status
):
    body_source = {"source": source} if source else {}
    response = submit(client, make_site(), ACCEPT_ALL, headers={"Sec-GPC": "1"}, **body_source)
    assert response.status_code == status, response.get_json()
    if status == 422:
        assert "decisions" in response.get_json()["errors"]
    assert record_count() == (1 if status == 201 else 0)


def test_full_ip_never_enters_the_history(client, make_site):
    site = make_site()
    response = client.post(
        f"/v1/sites/{site}/records",
        json={"decisions": ACCEPT_ALL},
        environ_base={"REMOTE_ADDR": "203.0.113.77"},
    )
    assert response.get_json()["record"]["ip"] == "203.0.113.0"


@pytest.mark.parametrize(
    ("decisions", "field"),
    [
        ([{"purpose": "telepathy", "granted": True}], "decisions.0.purpose"),
        ([{"purpose": "analytics", "granted": True}] * 2, "decisions.1.purpose"),
        ([{"purpose": "necessary", "granted": False}], "decisions.0.granted"),
        ([{"purpose": "analytics", "granted": "yes"}], "decisions.0.granted"),
        ([{"purpose": "analytics", "granted": 1}], "decisions.0.granted"),
        (
            [{"purpose": "analytics", "granted": True, "services": {"x": True}}],
            "decisions.0.services",
        ),
        ([], "decisions"),
    ],
)
def test_invalid_decisions_are_refused_and_nothing_is_written(
    client, demo_site, record_count, decisions, field
):
    response = submit(client, demo_site, decisions)
    assert response.status_code == 422
    body = response.get_json()
    assert body["error"] == "unprocessable_entity"
    assert field in body["errors"], body
    assert record_count() == 0


def test_service_granted_inside_refused_purpose_is_refused(client, demo_site, record_count):
    decisions = [{"purpose": "analytics", "granted": False, "services": {"matomo": True}}]
    response = submit(client, demo_site, decisions)
    assert response.status_code == 422
    assert record_count() == 0


def test_client_cannot_set_the_time(client, make_site, record_count):
    site = make_site()
    response = submit(client, site, ACCEPT_ALL, recorded_at="2020-01-01T00:00:00Z")
    assert response.status_code == 422
    assert "recorded_at" in response.get_json()["errors"]
    assert record_count() == 0


def test_unknown_policy_version_is_refused(client, make_site, record_count):
    site = make_site()
    response = submit(client, site, ACCEPT_ALL, policy_version="v99")
    assert response.status_code == 422
    assert "policy_version" in response.get_json()["errors"]
    assert record_count() == 0


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ('{"decisions": []}', "text/plain"),
        ("decisions=analytics", "application/x-www-form-urlencoded"),
    ],
)
def test_non_json_body_is_refused(client, make_site, record_count, data, content_type):
    site = make_site()
    response = client.post(f"/v1/sites/{site}/records", data=data, content_type=content_type)
    assert response.status_code == 415
    assert response.get_json()["error"] == "unsupported_media_type"
    assert record_count() == 0


def test_invalid_json_is_refused(client, make_site, record_count):
    site = make_site()
    response = client.post(
        f"/v1/sites/{site}/records", data='{"decisions": [', content_type="application/json"
    )
    assert response.status_code == 400
    assert response.get_json()["message"]
    assert record_count() == 0


def test_oversized_body_is_refused(client, make_site, record_count):
    site = make_site()
    body = '{"decisions": [], "language": "' + "x" * 100_000 + '"}'
    response = client.post(f"/v1/sites/{site}/records", data=body, content_type="application/json")
    assert response.status_code == 413
    assert response.get_json()["error"] == "request_entity_too_large"
    assert record_count() == 0


def test_unknown_site_is_404(client, app):
    response = check(client, "no-such-site", "analytics")
    assert response.status_code == 404
    body = response.get_json()
    assert body["allowed"] is False
    assert "no-such-site" in body["message"]


def test_banner_config_lists_cookie_purposes_only(client, demo_site):
    body = client.get(f"/v1/sites/{demo_site}/config").get_json()
    keys = [purpose["key"] for purpose in body["purposes"]]
    assert keys == ["necessary", "preferences", "analytics", "marketing"]
    assert body["policy"]["version"] == "2026-11-01"
    assert body["texts"]["fr"]["reject_all"] == "Tout refuser"
    assert len(body["config_hash"]) == 64


def test_banner_config_honours_if_none_match(client, demo_site):
    first = client.get(f"/v1/sites/{demo_site}/config")
    assert first.headers["Cache-Control"].startswith("public, max-age=")
    again = client.get(
        f"/v1/sites/{demo_site}/config", headers={"If-None-Match": first.headers["ETag"]}
    )
    assert again.status_code == 304
    assert again.data == b""


def test_allowed_origin_gets_cors_headers(client, make_site):
    site = make_site(origins=["https://shop.example"])
    response = client.get(f"/v1/sites/{site}/config", headers={"Origin": "https://shop.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    preflight = client.options(
        f"/v1/sites/{site}/records",
        headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"},
    )
    assert "X-Consent-Token" in preflight.headers["Access-Control-Allow-Headers"]


@pytest.mark.parametrize("origin", ["https://evil.example", "null"])
def test_foreign_origin_gets_no_banner_and_cannot_record(client, make_site, record_count, origin):
    site = make_site(origins=["https://shop.example"])
    config = client.get(f"/v1/sites/{site}/config", headers={"Origin": origin})
    assert config.status_code == 403
    # Readable by the page, so the banner can say why it does not run there.
    assert config.headers["Access-Control-Allow-Origin"] == origin
    assert "purposes" not in config.get_json()
    response = submit(client, site, ACCEPT_ALL, headers={"Origin": origin})
    assert response.status_code == 403
    assert "Access-Control-Allow-Origin" not in response.headers
    assert record_count() == 0


def test_refusal_names_the_fix(client, make_site):
    site = make_site(origins=["https://shop.example"])
    config = client.get(f"/v1/sites/{site}/config", headers={"Origin": "https://new.example"})
    assert config.get_json()["message"] == (
        f"Pages on https://new.example may not use site {site}: "
        f"add https://new.example to the allowed origins of site {site}."
    )


def test_refused_origins_are_counted_per_origin_and_bounded(app, client, make_site):
    from consent.models import MAX_REFUSED_ORIGINS
    from consent.sites import get_site_by_key, refused_origins

    site = make_site(origins=["https://shop.example"])
    for _ in range(3):
        client.get(f"/v1/sites/{site}/config", headers={"Origin": "https://staging.example"})
    submit(client, site, ACCEPT_ALL, headers={"Origin": "https://staging.example"})
    for number in range(MAX_REFUSED_ORIGINS + 20):
        client.get(f"/v1/sites/{site}/config", headers={"Origin": f"https://f{number}.example"})
    client.get(f"/v1/sites/{site}/config", headers={"Origin": "javascript:alert(1)"})
    client.get(f"/v1/sites/{site}/config", headers={"Origin": "https://shop.example"})
    with app.app_context():
        counted = refused_origins(get_site_by_key(site))
    assert len(counted) == MAX_REFUSED_ORIGINS
    assert (counted[0].origin, counted[0].count) == ("https://staging.example", 4)
    assert "https://shop.example" not in {entry.origin for entry in counted}


def test_preflight_is_cached_by_the_browser(client, make_site):
    site = make_site(origins=["https://shop.example"])
    preflight = client.options(
        f"/v1/sites/{site}/records",
        headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"},
    )
    assert int(preflight.headers["Access-Control-Max-Age"]) >= 7200


def test_config_in_the_visitors_languages_carries_only_the_chosen_and_default_texts(
    client, demo_site
):
    full = client.get(f"/v1/sites/{demo_site}/config").get_json()
    trimmed = client.get(f"/v1/sites/{demo_site}/config?lang=xx,de-AT,fr").get_json()
    assert set(trimmed["texts"]) == {"de", "en"}
    assert {lang for p in trimmed["purposes"] for lang in p["translations"]} == {"de", "en"}
    assert trimmed["languages"] == full["languages"]
    assert trimmed["config_hash"] == full["config_hash"]  # the hash covers every language


def test_config_names_a_bad_language_list(client, demo_site):
    response = client.get(f"/v1/sites/{demo_site}/config?lang=fr;drop")
    assert response.status_code == 422
    assert "lang" in response.get_json()["errors"]


def test_config_is_compressed_when_the_client_accepts_it(client, demo_site):
    import gzip
    import json

    plain = client.get(f"/v1/sites/{demo_site}/config")
    packed = client.get(f"/v1/sites/{demo_site}/config", headers={"Accept-Encoding": "gzip"})
    assert packed.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in packed.headers["Vary"]
    assert json.loads(gzip.decompress(packed.data)) == plain.get_json()
    assert len(packed.data) < len(plain.data) / 3


def test_banner_shown_is_counted_without_identifier(client, make_site):
    site = make_site()
    assert client.post(f"/v1/sites/{site}/shown").status_code == 204
    assert client.post(f"/v1/sites/{site}/shown").status_code == 204


def test_gpc_support_is_declared(client, app):
    body = client.get("/.well-known/gpc.json").get_json()
    assert body["gpc"] is True


def test_responses_carry_a_strict_content_security_policy(client, make_site):
    site = make_site()
    policy = client.get(f"/v1/sites/{site}/config").headers["Content-Security-Policy"]
    assert "base-uri 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy


def test_openapi_document_describes_every_route(client, app):
    document = client.get("/v1/openapi.json").get_json()
    assert set(document["paths"]) >= {
        "/v1/sites/{site_key}/config",
        "/v1/sites/{site_key}/records",
        "/v1/sites/{site_key}/me",
        "/v1/sites/{site_key}/check",
        "/v1/sites/{site_key}/shown",
        "/v1/server/check",
        "/v1/server/records",
        "/v1/server/links",
    }


def test_openapi_document_declares_failure_answers(client, app):
    """Each operation declares the database's answers; rate-limited ones 429 as well."""
    document = client.get("/v1/openapi.json").get_json()
    limited = {
        "/v1/sites/{site_key}/records",
        "/v1/sites/{site_key}/check",
        "/v1/sites/{site_key}/shown",
        "/v1/sites/{site_key}/rights-requests",
        "/v1/server/check",
        "/v1/server/bulk-check",
    }
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            codes = set(operation["responses"])
            assert {"409", "503", "507"} <= codes, (method, path)
            assert ("429" in codes) == (path in limited), (method, path)
    check_429 = document["paths"]["/v1/sites/{site_key}/check"]["get"]["responses"]["429"]
    assert "Retry-After" in check_429["headers"]


def test_demo_policy_link_leads_to_the_demo_policy(client, demo_site):
    config = client.get(f"/v1/sites/{demo_site}/config").get_json()
    page = client.get(config["policy"]["url"])
    assert page.status_code == 200
    assert f"version {config['policy']['version']}" in page.text
    assert "analytics" in page.text
    assert "'unsafe-inline'" not in page.headers["Content-Security-Policy"]
