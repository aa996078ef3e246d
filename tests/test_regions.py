"""Regions: the visitor's region from the proxy's headers, the site's rules (and their
refusal where opt-in must stay), and what the check, the configuration and the records
say per region."""

from __future__ import annotations

import json
import re

import pytest
from helpers import ACCEPT_ALL, bearer, check, submit
from sqlalchemy import select, update

from consent import chain
from consent.db import db
from consent.models import ConsentRecord, Site
from consent.sites import get_site_by_key

CLOUDFRONT = {
    "REGION_HEADER": "CloudFront-Viewer-Country",
    "SUBREGION_HEADER": "CloudFront-Viewer-Country-Region",
}
CLOUDFLARE = {"REGION_HEADER": "CF-IPCountry", "SUBREGION_HEADER": "CF-Region-Code"}
US_RULES = ["EEA,UK,CH=opt-in", "US-CA=notice", "US-PRIVACY-STATES=opt-out"]


@pytest.fixture
def regional_site(make_site, runner):
    """A site with opt-in in Europe, a notice in California, opt-out in the US privacy
    states; analytics and marketing may run until opted out there. Its key."""
    site = make_site()
    result = runner.invoke(
        args=["set-regions", site, *US_RULES, "--opt-out", "analytics", "--opt-out", "marketing"]
    )
    assert result.exit_code == 0, result.output
    return site


@pytest.fixture
def cloudflare(app_with):
    """The service behind Cloudflare: the region comes in CF-IPCountry and CF-Region-Code."""
    return app_with(**CLOUDFLARE, RATELIMIT_ENABLED=False).test_client()


def where(country=None, subdivision=None, **more) -> dict:
    headers = {"CF-IPCountry": country, "CF-Region-Code": subdivision, **more}
    return {name: value for name, value in headers.items() if value is not None}


# --- the visitor's region -------------------------------------------------------------


@pytest.mark.parametrize(
    ("country", "subdivision", "region"),
    [
        ("FR", None, "FR"),
        ("fr", None, "FR"),
        (" DE ", None, "DE"),
        ("US", "CA", "US-CA"),
        ("US", "us-ca", "US-CA"),
        ("US-CA", None, "US-CA"),
        ("US", "ZZ", "US"),  # no such state: the country alone
        ("US", "garbage!", "US"),
        ("GB", "ENG", "GB-ENG"),
        ("XX", None, None),  # Cloudflare: unknown
        ("T1", "CA", None),  # Cloudflare: Tor
        ("EU", None, None),  # not a country
        ("ZZ", None, None),
        ("", None, None),
        ("FRA", None, None),
        ("<script>", None, None),
        (None, "CA", None),
    ],
)
def test_region_from_the_proxy_headers(app_with, demo_site, country, subdivision, region):
    client = app_with(**CLOUDFRONT).test_client()
    headers = {
        "CloudFront-Viewer-Country": country,
        "CloudFront-Viewer-Country-Region": subdivision,
    }
    response = client.get(
        f"/v1/sites/{demo_site}/config",
        headers={name: value for name, value in headers.items() if value is not None},
    )
    assert response.status_code == 200
    assert response.get_json()["region"] == region


def test_the_header_counts_only_when_configured(client, demo_site):
    response = client.get(f"/v1/sites/{demo_site}/config", headers={"CF-IPCountry": "US"})
    assert response.get_json()["region"] is None
    assert "CF-IPCountry" not in response.headers.get("Vary", "")


@pytest.mark.parametrize("value", ["CF IPCountry", "CF-IPCountry\n", "é", "a:b"])
def test_a_region_header_setting_that_is_no_header_name_is_refused(app_with, value):
    with pytest.raises(Exception, match="CONSENT_REGION_HEADER"):
        app_with(REGION_HEADER=value)


# --- rules -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (["EEA=opt-out"], "Opt-in cannot be replaced in the EEA, the UK or Switzerland"),
        (["EU=notice"], "Opt-in cannot be replaced"),
        (["UK=opt-out"], "Opt-in cannot be replaced"),
        (["GB=opt-out"], "Opt-in cannot be replaced"),
        (["CH=notice"], "Opt-in cannot be replaced"),
        (["NO,US=opt-out"], "NO must stay opt-in"),
        (["FR-75=notice"], "FR-75 must stay opt-in"),
        (["RE=opt-out"], "RE must stay opt-in"),  # Réunion is in the EU
        (["*=opt-out"], "put EEA,UK,CH=opt-in before it"),
        (["EEA,UK=opt-in", "*=opt-out"], "put EEA,UK,CH=opt-in before it"),
        (["US=maybe"], "write REGIONS=MODE"),
        (["US"], "write REGIONS=MODE"),
        (["=opt-out"], "write REGIONS=MODE"),
        (["XX=opt-out"], "'XX' is not a region"),
        (["US-ZZ=opt-out"], "'US-ZZ' is not a region"),
        (["EUROPE=opt-in"], "'EUROPE' is not a region"),
    ],
)
def test_a_rule_that_cannot_stand_is_refused_in_one_line(runner, make_site, rules, message):
    site = make_site()
    result = runner.invoke(args=["set-regions", site, *rules])
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert line.startswith("Error: region_rules: ") and message in line


@pytest.mark.parametrize(
    ("rules", "stored"),
    [
        (US_RULES, US_RULES),
        (["EEA,UK,CH=opt-in", "*=notice"], ["EEA,UK,CH=opt-in", "*=notice"]),
        (["eea, uk ,ch = OPT-IN", "us=opt-out"], ["EEA,UK,CH=opt-in", "US=opt-out"]),
        (["EEA=opt-in", "FR=opt-in", "CA=notice"], ["EEA=opt-in", "FR=opt-in", "CA=notice"]),
    ],
)
def test_rules_that_keep_europe_opt_in_are_stored_in_order(runner, make_site, rules, stored):
    result = runner.invoke(args=["set-regions", make_site(), *rules])
    assert result.exit_code == 0, result.output
    assert "Region rules of 'site-" in result.output
    assert "; ".join(stored) in result.output


def test_a_required_purpose_cannot_be_marked_opt_out(runner, make_site):
    result = runner.invoke(args=["set-regions", make_site(), "--opt-out", "necessary"])
    assert result.exit_code == 1
    assert "'necessary' is required" in result.output


# --- the check, per region ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "purpose", "answer"),
    [
        (where("US", "TX"), "analytics", (True, "opt_out_default")),
        (where("US", "CA"), "analytics", (True, "opt_out_default")),  # notice
        (where("US", "CA"), "preferences", (False, "no_decision")),  # not marked
        (where("US", "TX", **{"Sec-GPC": "1"}), "marketing", (False, "no_decision")),
        (where("US", "TX", **{"Sec-GPC": "1"}), "analytics", (True, "opt_out_default")),
        (where("US", "NY"), "analytics", (False, "no_decision")),  # no law, no rule
        (where("US"), "analytics", (False, "no_decision")),  # state unknown
        (where("FR"), "analytics", (False, "no_decision")),
        (where("XX"), "analytics", (False, "no_decision")),
        (where(), "analytics", (False, "no_decision")),
        (where("US", "TX"), "necessary", (True, "required")),
    ],
)
def test_the_public_check_applies_the_rule_of_the_region(
    cloudflare, regional_site, headers, purpose, answer
):
    response = cloudflare.get(
        f"/v1/sites/{regional_site}/check", query_string={"purpose": purpose}, headers=headers
    )
    body = response.get_json()
    assert (body["allowed"], body["reason"]) == answer


def test_a_recorded_refusal_beats_the_opt_out_default(cloudflare, regional_site):
    texas = where("US", "TX")
    refused = [{"purpose": "analytics", "granted": False}]
    token = submit(cloudflare, regional_site, refused, headers=texas).get_json()["visitor_token"]
    body = check(cloudflare, regional_site, "analytics", token=token).get_json()
    assert (body["allowed"], body["reason"]) == (False, "denied")


@pytest.mark.parametrize("country", ["FR", "GB", "CH", "NO", "GP"])
def test_the_eea_stays_opt_in_whatever_the_database_holds(app, cloudflare, regional_site, country):
    with app.app_context():  # as if someone wrote the table by hand
        db.session.execute(
            update(Site)
            .where(Site.key == regional_site)
            .values(region_rules=[{"regions": ["*"], "mode": "opt-out"}])
        )
        db.session.commit()
    response = cloudflare.get(
        f"/v1/sites/{regional_site}/check",
        query_string={"purpose": "analytics"},
        headers=where(country),
    )
    assert response.get_json()["reason"] == "no_decision"


@pytest.mark.parametrize(
    ("query", "answer"),
    [
        ({"region": "US-TX"}, (True, "opt_out_default")),
        ({"region": "us-tx"}, (True, "opt_out_default")),
        ({"region": "US-TX", "gpc": "true"}, (True, "opt_out_default")),
        ({"region": "DE"}, (False, "no_decision")),
        ({}, (False, "no_decision")),
    ],
)
def test_the_server_check_takes_the_region_as_an_argument(
    client, regional_site, make_key, query, answer
):
    key = make_key(regional_site, "read", "write")
    user = {"user_id": "u-1"}
    only_preferences = {"decisions": [{"purpose": "preferences", "granted": True}], **user}
    assert (
        client.post("/v1/server/records", json=only_preferences, headers=bearer(key)).status_code
        == 201
    )
    response = client.get(
        "/v1/server/check",
        query_string={"purpose": "analytics", **user, **query},
        headers=bearer(key),
    )
    body = response.get_json()
    assert (body["allowed"], body["reason"]) == answer


@pytest.mark.parametrize(
    ("method", "url", "arguments"),
    [
        ("GET", "/v1/server/check", {"purpose": "analytics", "user_id": "u-1"}),
        ("POST", "/v1/server/bulk-check", {"purpose": "analytics", "user_ids": ["u-1"]}),
        (
            "POST",
            "/v1/server/records",
            {"user_id": "u-1", "decisions": [{"purpose": "analytics", "granted": True}]},
        ),
    ],
)
@pytest.mark.parametrize("region", ["Texas", "XX", "US-ZZ", ""])
def test_a_region_argument_that_is_no_iso_code_is_refused_naming_it(
    client, regional_site, make_key, method, url, arguments, region
):
    key = make_key(regional_site, "read", "write")
    arguments = {**arguments, "region": region}
    place = {"query_string": arguments} if method == "GET" else {"json": arguments}
    response = client.open(url, method=method, headers=bearer(key), **place)
    assert response.status_code == 422
    assert "ISO 3166" in response.get_json()["errors"]["region"][0]


# --- configuration, bundle, records ----------------------------------------------------


def test_the_configuration_names_the_region_and_mode_and_varies_by_it(cloudflare, regional_site):
    url = f"/v1/sites/{regional_site}/config"
    texas, france = (
        cloudflare.get(url, headers=where("US", "TX")),
        cloudflare.get(url, headers=where("FR")),
    )
    assert (texas.get_json()["region"], texas.get_json()["mode"]) == ("US-TX", "opt-out")
    assert (france.get_json()["region"], france.get_json()["mode"]) == ("FR", "opt-in")
    assert texas.get_json()["config_hash"] == france.get_json()["config_hash"]
    assert texas.headers["ETag"] != france.headers["ETag"]
    for response in (texas, france):
        assert {"CF-IPCountry", "CF-Region-Code"} <= {
            name.strip() for name in response.headers["Vary"].split(",")
        }


def test_the_bundle_carries_the_region_and_varies_by_it(cloudflare, regional_site):
    response = cloudflare.get(f"/widget/consent.js?site={regional_site}", headers=where("US", "CA"))
    assert response.status_code == 200
    # Minified: the configuration's keys lose their quotes.
    assert re.search(r'\bmode"?:"notice"', response.get_data(as_text=True))
    assert "CF-Region-Code" in response.headers["Vary"]


def test_consent_mode_regions_spell_out_the_groups(cloudflare, regional_site):
    config = cloudflare.get(f"/v1/sites/{regional_site}/config").get_json()
    [california, states] = config["consent_mode_regions"]
    assert california == {"region": ["US-CA"], "mode": "notice"}
    assert states["mode"] == "opt-out"
    assert {"US-CA", "US-TX", "US-VA", "US-RI"} <= set(states["region"])
    assert "US-NY" not in states["region"]


def test_a_site_without_rules_is_configured_as_before_regions(make_site, cloudflare):
    site = make_site()
    before = cloudflare.get(f"/v1/sites/{site}/config").get_json()
    assert "region_rules" not in before
    assert "privacy_choices" not in before["texts"]["en"]
    assert all("opt_out" not in purpose for purpose in before["purposes"])


def test_the_record_keeps_region_and_mode_and_the_chain_verifies(
    cloudflare, regional_site, runner, app
):
    submit(cloudflare, regional_site, ACCEPT_ALL)  # no header: unknown
    response = submit(cloudflare, regional_site, ACCEPT_ALL, headers=where("US", "CA"))
    record = response.get_json()["record"]
    assert (record["region"], record["mode"]) == ("US-CA", "notice")
    with app.app_context():
        rows = db.session.execute(
            select(ConsentRecord.region, ConsentRecord.mode).order_by(ConsentRecord.id)
        ).all()
    assert [tuple(row) for row in rows] == [(None, "opt-in"), ("US-CA", "notice")]
    result = runner.invoke(args=["verify", regional_site])
    assert result.exit_code == 0, result.output


def test_records_written_before_regions_hash_as_before_and_verify(app, client, make_site, runner):
    site = make_site()
    submit(client, site, ACCEPT_ALL)
    with app.app_context():  # a record as the code before regions appended it
        site_row = get_site_by_key(site)
        record = chain.append_record(site_row, None, event="purge", source="api")
        assert (record.region, record.mode) == (None, None)
        assert not {"region", "mode"} & set(json.loads(chain.canonical_record(record, site)))
        db.session.commit()
    submit(client, site, ACCEPT_ALL)
    result = runner.invoke(args=["verify", site])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("headers", "decisions", "field"),
    [
        ({}, [{"purpose": "marketing", "granted": False}], "source"),
        ({"Sec-GPC": "1"}, [{"purpose": "marketing", "granted": True}], "decisions"),
    ],
)
def test_a_gpc_record_needs_the_signal_and_only_opts_out(
    cloudflare, regional_site, headers, decisions, field
):
    response = submit(
        cloudflare, regional_site, decisions, source="gpc", headers={**where("US", "CA"), **headers}
    )
    assert response.status_code == 422
    assert field in response.get_json()["errors"]


def test_a_gpc_record_is_kept_with_its_source(cloudflare, regional_site):
    response = submit(
        cloudflare,
        regional_site,
        [{"purpose": "marketing", "granted": False}],
        source="gpc",
        headers=where("US", "CA", **{"Sec-GPC": "1"}),
    )
    assert response.status_code == 201
    record = response.get_json()["record"]
    assert (record["source"], record["gpc"], record["mode"]) == ("gpc", True, "notice")


@pytest.mark.parametrize(
    ("region", "answer"), [("US-VA", (True, "opt_out_default")), ("IT", (False, "no_decision"))]
)
def test_the_bulk_check_takes_the_region(client, regional_site, make_key, region, answer):
    key = make_key(regional_site, "read", "write")
    body = {"purpose": "analytics", "user_ids": ["nobody-yet"], "region": region}
    response = client.post("/v1/server/bulk-check", json=body, headers=bearer(key))
    [result] = response.get_json()["results"]
    assert (result["allowed"], result["reason"]) == answer
