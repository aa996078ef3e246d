"""Recording's per-process copy of a site never answers from a change it missed.

Each process keeps what recording reads about a site (``consent.site_facts``) and checks
it on every record against ``sites.config_version``, which the database bumps itself on
any change to the site, its purposes, policy versions or webhook endpoints. The banner's
fast path has the batch check it, under the chain lock.
"""

from __future__ import annotations

import contextlib

import pytest
from helpers import ACCEPT_ALL, submit
from sqlalchemy import func, select, text

from consent import ledger
from consent.db import db
from consent.models import BannerVersion, ConsentRecord, Purpose, Site, WebhookEvent
from consent.site_facts import site_facts
from consent.sites import banner_config, get_site_by_key, publish_policy, set_purpose
from consent.webhooks import add_endpoint

#: Plain SQL on each table that is part of a site's configuration, as any writer might.
CHANGES = {
    "site updated": "UPDATE sites SET lifetime_days = 90 WHERE id = :site",
    "purpose added": "INSERT INTO purposes (site_id, key, kind, is_required, position, "
    "translations, cookies, services, consent_mode, is_opt_out_default, is_notice_only) "
    "VALUES (:site, 'extra', 'cookie', false, 9, '{}', '[]', '[]', '[]', false, false)",
    "purpose updated": "UPDATE purposes SET is_required = true "
    "WHERE site_id = :site AND key = 'analytics'",
    "purpose deleted": "DELETE FROM purposes WHERE site_id = :site AND key = 'marketing'",
    "policy published": "INSERT INTO policy_versions (site_id, version, published_at, "
    "is_material) VALUES (:site, 'v2', CURRENT_TIMESTAMP, false)",
    "policy changed": "UPDATE policy_versions SET is_material = false WHERE site_id = :site",
    "policy deleted": "DELETE FROM policy_versions WHERE site_id = :site",
    "endpoint added": "INSERT INTO webhook_endpoints (site_id, url, events, secret_encrypted, "
    "is_email_included, is_active, created_at) VALUES (:site, 'https://example.com/h', "
    "'[]', :secret, false, true, CURRENT_TIMESTAMP)",
}


def config_version(site_key: str) -> int:
    return db.session.scalar(select(Site.config_version).where(Site.key == site_key))


@pytest.mark.parametrize("change", CHANGES)
def test_the_database_bumps_the_version_on_any_change(app, make_site, change):
    site_key = make_site()
    with app.app_context():
        before = config_version(site_key)
        site_id = get_site_by_key(site_key).id
        db.session.execute(text(CHANGES[change]), {"site": site_id, "secret": b"x"})
        db.session.commit()
        assert config_version(site_key) > before


def test_other_sites_and_counters_keep_their_version(app, client, make_site):
    """Records, banner displays and another site's changes are not configuration."""
    site_key, other = make_site(), make_site()
    submit(client, site_key, ACCEPT_ALL)
    with app.app_context():
        before = config_version(site_key)
    assert client.post(f"/v1/sites/{site_key}/shown").status_code == 204
    assert submit(client, site_key, ACCEPT_ALL).status_code == 201
    with app.app_context():
        set_purpose(get_site_by_key(other), "extra", kind="cookie")
        db.session.commit()
        assert config_version(site_key) == before


def test_a_purpose_made_required_elsewhere_is_enforced_on_the_next_record(app, client, make_site):
    site_key = make_site()
    refusal = [{"purpose": "analytics", "granted": False}]
    assert submit(client, site_key, refusal).status_code == 201  # the copy is made
    with app.app_context(), db.engine.begin() as connection:  # another writer, plain SQL
        connection.execute(text("UPDATE purposes SET is_required = true WHERE key = 'analytics'"))
    response = submit(client, site_key, refusal)
    assert response.status_code == 422
    assert "decisions.0.granted" in response.get_json()["errors"]


def test_a_change_committed_while_a_submission_waits_for_the_lock_is_enforced(
    app, client, make_site, monkeypatch
):
    """The fast path checks a submission against its copy without reading the site; the
    batch confirms the copy under the chain lock, and a submission the site outgrew
    meanwhile is not appended but checked again, against the site as it is now."""
    site_key = make_site()
    refusal = [{"purpose": "analytics", "granted": False}]
    assert submit(client, site_key, refusal).status_code == 201  # the copy is made
    writing_connection, changed = ledger.writing_connection, []

    @contextlib.contextmanager
    def after_a_change():
        if not changed:  # committed after the fast path's checks, before the batch's lock
            changed.append(True)
            with db.engine.begin() as connection:
                connection.execute(
                    text("UPDATE purposes SET is_required = true WHERE key = 'analytics'")
                )
        with writing_connection() as connection:
            yield connection

    monkeypatch.setattr(ledger, "writing_connection", after_a_change)
    response = submit(client, site_key, refusal)
    assert changed
    assert response.status_code == 422
    assert "decisions.0.granted" in response.get_json()["errors"]
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(ConsentRecord)) == 1


def test_a_new_policy_and_endpoint_reach_the_next_record(app, client, make_site):
    site_key = make_site()
    assert submit(client, site_key, ACCEPT_ALL).get_json()["record"]["policy_version"] == "v1"
    with app.app_context():
        site = get_site_by_key(site_key)
        publish_policy(site, "v2", is_material=True)
        add_endpoint(site, "https://example.com/hook", ["consent.recorded"])
        db.session.commit()
    record = submit(client, site_key, ACCEPT_ALL).get_json()["record"]
    assert record["policy_version"] == "v2"
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(WebhookEvent)) == 1


def test_a_change_rolled_back_is_never_kept(app, client, make_site):
    """A session that wrote may read its own uncommitted change: no copy is kept from it."""
    site_key = make_site()
    with app.app_context():
        set_purpose(get_site_by_key(site_key), "extra", kind="cookie")
        db.session.flush()
        assert "extra" in {p.key for p in site_facts(site_key).purposes}
        db.session.rollback()
        assert db.session.scalar(select(func.count()).where(Purpose.key == "extra")) == 0
        # Another change commits: the version now equals the rolled-back one's.
        get_site_by_key(site_key).lifetime_days = 90
        db.session.commit()
    response = submit(client, site_key, [{"purpose": "extra", "granted": True}])
    assert response.status_code == 422
    assert "decisions.0.purpose" in response.get_json()["errors"]


def test_a_banner_is_trusted_as_archived_only_once_committed(app, client, make_site):
    """A record refused after archiving its banner leaves the hash untrusted (rolled back)."""
    site_key = make_site()
    with app.app_context():
        config_hash = banner_config(get_site_by_key(site_key))["config_hash"]
    nope = [{"purpose": "nope", "granted": True}]
    assert submit(client, site_key, nope, config_hash=config_hash).status_code == 422
    assert submit(client, site_key, ACCEPT_ALL, config_hash=config_hash).status_code == 201
    with app.app_context():
        archived = select(func.count()).where(BannerVersion.config_hash == config_hash)
        assert db.session.scalar(archived) == 1
