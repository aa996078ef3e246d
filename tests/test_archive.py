"""The banner archive: every served configuration kept under its hash, immutably."""

from __future__ import annotations

import json

import pytest
from helpers import ACCEPT_ALL, bearer, submit
from sqlalchemy import text

from consent.admin.editing import update_site
from consent.db import db
from consent.sites import banner_config, get_site_by_key


@pytest.fixture
def site(make_site):
    return make_site("shop")


@pytest.fixture
def key(site, make_key):
    return make_key(site, "read", "write", "rights")


def served_config(client, site_key) -> dict:
    response = client.get(f"/v1/sites/{site_key}/config")
    assert response.status_code == 200
    return response.get_json()


def retitle(app, site_key, title):
    """Edit the banner's title, as the admin's settings form does."""
    with app.app_context():
        site = get_site_by_key(site_key)
        update_site(
            site,
            name=site.name,
            origins=site.allowed_origins,
            languages=site.languages,
            lifetime_days=site.lifetime_days,
            retention_days=site.retention_days,
            texts={"en": {"title": title}},
            controller_name=None,
            controller_contact=None,
        )
        db.session.commit()


def banner_version(client, key, config_hash):
    return client.get(f"/v1/server/banner-versions/{config_hash}", headers=bearer(key))


def test_a_served_configuration_is_archived_under_its_hash(client, site, key):
    config = served_config(client, site)
    response = banner_version(client, key, config["config_hash"])
    assert response.status_code == 200
    archived = response.get_json()
    assert archived["content"] == config
    assert archived["policy"]["version"] == "v1"
    assert archived["widget"]["integrity"].startswith("sha384-")


def test_an_edit_keeps_the_earlier_configuration(app, client, site, key):
    before = served_config(client, site)
    retitle(app, site, "Cookies?")
    after = served_config(client, site)
    assert after["config_hash"] != before["config_hash"]
    old = banner_version(client, key, before["config_hash"]).get_json()
    assert old["content"]["texts"]["en"]["title"] == "Your privacy choices"


def test_the_bundled_script_archives_its_configuration(client, site, key):
    assert client.get(f"/widget/consent.js?site={site}").status_code == 200
    config_hash = served_config(client, site)["config_hash"]
    assert banner_version(client, key, config_hash).status_code == 200


def test_a_record_naming_a_banner_never_served_is_refused(client, site, record_count):
    response = submit(client, site, ACCEPT_ALL, config_hash="ab" * 32)
    assert response.status_code == 422
    assert "config_hash" in response.get_json()["errors"]
    assert record_count() == 0


def test_a_record_naming_the_current_banner_is_accepted_and_archives_it(app, client, site, key):
    with app.app_context():
        current = banner_config(get_site_by_key(site))["config_hash"]
    assert submit(client, site, ACCEPT_ALL, config_hash=current).status_code == 201
    assert banner_version(client, key, current).status_code == 200


def test_a_server_record_naming_an_unknown_banner_is_refused(client, site, key):
    response = client.post(
        "/v1/server/records",
        json={"user_id": "u1", "decisions": ACCEPT_ALL, "config_hash": "cd" * 32},
        headers=bearer(key),
    )
    assert response.status_code == 422
    assert "config_hash" in response.get_json()["errors"]


@pytest.mark.parametrize(
    "config_hash, status", [("ab" * 32, 404), ("not-a-hash", 422), ("AB" * 32, 422)]
)
def test_asking_for_an_unknown_or_malformed_hash(client, site, key, config_hash, status):
    response = banner_version(client, key, config_hash)
    assert response.status_code == status
    if status == 422:
        assert "config_hash" in response.get_json()["errors"]


def test_another_sites_key_does_not_see_the_banner(client, site, make_site, make_key):
    config_hash = served_config(client, site)["config_hash"]
    other = make_key(make_site("other"), "read")
    assert banner_version(client, other, config_hash).status_code == 404


def test_exports_and_receipts_carry_the_banner_each_record_names(app, client, site, key):
    config = served_config(client, site)
    token = submit(client, site, ACCEPT_ALL, config_hash=config["config_hash"]).get_json()
    retitle(app, site, "Cookies?")
    query = {"visitor_token": token["visitor_token"]}
    export = client.get(
        "/v1/server/subjects/export", query_string=query, headers=bearer(key)
    ).get_json()
    assert export["banner_versions"][config["config_hash"]]["content"] == config
    receipts = client.get(
        "/v1/server/subjects/export",
        query_string={**query, "format": "receipts"},
        headers=bearer(key),
    ).get_json()
    assert receipts[0]["banner_version"]["config_hash"] == config["config_hash"]


def test_cli_prints_an_archived_banner(client, runner, site):
    config_hash = served_config(client, site)["config_hash"]
    result = runner.invoke(args=["banner-version", config_hash])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert (shown["site"], shown["config_hash"]) == (site, config_hash)


@pytest.mark.parametrize(
    "config_hash, message",
    [("ab" * 32, "was served"), ("nope", "give the 64 lower-case hex digits")],
)
def test_cli_explains_a_hash_it_cannot_show(runner, site, config_hash, message):
    result = runner.invoke(args=["banner-version", config_hash])
    assert result.exit_code == 1
    assert message in result.output


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE banner_versions SET content = '{}'",
        "UPDATE banner_versions SET widget_version = 'x'",
        "UPDATE banner_versions SET first_served_at = last_served_at",
        "DELETE FROM banner_versions",
    ],
)
def test_the_database_refuses_to_rewrite_a_banner_a_record_names(app, client, site, statement):
    config_hash = served_config(client, site)["config_hash"]
    assert submit(client, site, ACCEPT_ALL, config_hash=config_hash).status_code == 201
    with pytest.raises(Exception, match="append-only"), app.app_context():
        with db.engine.begin() as connection:
            connection.execute(text(statement))


def test_the_last_serving_time_may_move(app, client, site):
    served_config(client, site)
    with app.app_context(), db.engine.begin() as connection:
        moved = connection.execute(
            text("UPDATE banner_versions SET last_served_at = first_served_at")
        )
    assert moved.rowcount == 1
