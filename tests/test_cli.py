"""The command line, through Flask's CLI runner, against the real database."""

from __future__ import annotations

from helpers import ACCEPT_ALL, check, submit
from sqlalchemy import func, select

from consent.db import db
from consent.i18n import BUILT_IN_LANGUAGES
from consent.models import PolicyVersion, Purpose, Site


def count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def test_init_db_is_idempotent(runner):
    result = runner.invoke(args=["init-db"])
    assert result.exit_code == 0
    assert "up to date" in result.output


def test_seed_demo_twice_changes_nothing(app, runner):
    first = runner.invoke(args=["seed-demo"])
    assert first.exit_code == 0, first.output
    counts = [count(app, model) for model in (Site, Purpose, PolicyVersion)]
    second = runner.invoke(args=["seed-demo"])
    assert second.exit_code == 0
    assert [count(app, model) for model in (Site, Purpose, PolicyVersion)] == counts == [1, 5, 1]


def test_create_site_then_record_against_it(runner, client):
    result = runner.invoke(
        args=["create-site", "blog", "My blog", "--origin", "https://blog.example"]
    )
    assert result.exit_code == 0, result.output
    token = submit(client, "blog", ACCEPT_ALL).get_json()["visitor_token"]
    assert check(client, "blog", "analytics", token=token).get_json()["allowed"] is True


def test_create_site_refuses_a_lifetime_over_thirteen_months(runner, app):
    result = runner.invoke(args=["create-site", "blog", "Blog", "--lifetime-days", "400"])
    assert result.exit_code == 1
    assert "lifetime_days" in result.output and "395" in result.output
    assert count(app, Site) == 0


def test_create_site_refuses_a_taken_key(runner, make_site):
    make_site("shop")
    result = runner.invoke(args=["create-site", "shop", "Shop again"])
    assert result.exit_code == 1
    assert "exists already" in result.output


def test_create_site_refuses_a_bad_origin(runner):
    result = runner.invoke(args=["create-site", "blog", "Blog", "--origin", "blog.example/path"])
    assert result.exit_code == 1
    assert "origin" in result.output


def test_add_policy_to_unknown_site_is_a_readable_error(runner):
    result = runner.invoke(args=["add-policy", "nowhere", "v2"])
    assert result.exit_code == 1
    assert "No site with key 'nowhere'" in result.output


def test_issued_key_is_shown_once_and_works(runner, client, make_site):
    site = make_site()
    result = runner.invoke(args=["issue-key", site, "crm", "--scope", "read"])
    assert result.exit_code == 0, result.output
    secret = result.output.strip().splitlines()[-1]
    response = client.get(
        "/v1/server/check",
        query_string={"purpose": "analytics", "user_id": "u"},
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert response.status_code == 200


def test_key_secret_is_stored_hashed(app, runner, make_site):
    from consent.models import ApiKey

    site = make_site()
    secret = runner.invoke(args=["issue-key", site, "crm"]).output.strip().splitlines()[-1]
    with app.app_context():
        stored = db.session.scalars(select(ApiKey)).one()
        assert secret.split(".")[1] not in (stored.secret_hash, stored.prefix)


def test_revoking_an_unknown_key_is_a_readable_error(runner):
    result = runner.invoke(args=["revoke-key", "ck_nope"])
    assert result.exit_code == 1
    assert "No key" in result.output


def test_verify_every_site(runner, client, make_site):
    first, second = make_site("alpha"), make_site("beta")
    submit(client, first, ACCEPT_ALL)
    result = runner.invoke(args=["verify"])
    assert result.exit_code == 0
    assert "alpha: OK, 1 records." in result.output
    assert "beta: OK, 0 records." in result.output
    assert second


def test_set_appearance_changes_only_what_is_given(runner, client, make_site):
    site = make_site()
    result = runner.invoke(args=["set-appearance", site, "--layout", "bar", "--no-settings-button"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(args=["set-appearance", site, "--theme", "dark"])
    assert result.exit_code == 0, result.output
    appearance = client.get(f"/v1/sites/{site}/config").get_json()["appearance"]
    assert appearance == {
        "layout": "bar",
        "theme": "dark",
        "settings_button": False,
        "button_side": "left",
    }


def test_set_appearance_names_a_bad_choice_in_one_line(runner, make_site):
    result = runner.invoke(args=["set-appearance", make_site(), "--layout", "popup"])
    assert result.exit_code == 2
    assert "'popup' is not one of 'box', 'bar', 'modal'" in result.output


def test_list_sites_shows_each_site(runner, make_site):
    make_site("shop", origins=["https://shop.example"])
    result = runner.invoke(args=["list-sites"])
    assert result.exit_code == 0, result.output
    columns = result.output.splitlines()[1].split()
    assert columns[:4] == ["shop", "Test", "site", "https://shop.example"]
    assert columns[4:] == list(BUILT_IN_LANGUAGES)  # a new site offers every built-in one


def test_list_keys_shows_prefixes_never_secrets(runner, make_site, make_key):
    secret = make_key(make_site("shop"), "read", "write")
    result = runner.invoke(args=["list-keys", "shop"])
    assert result.exit_code == 0, result.output
    assert secret.partition(".")[0] in result.output
    assert secret not in result.output
    assert "read write" in result.output and "active" in result.output


def test_list_keys_of_an_unknown_site_says_so_in_one_line(runner):
    result = runner.invoke(args=["list-keys", "nope"])
    assert result.exit_code == 1
    assert result.output == "Error: No site with key 'nope'.\n"


def test_list_admins_shows_roles_per_site(runner, make_site):
    make_site("shop")
    runner.invoke(args=["create-admin", "ada", "--password", "a long passphrase"])
    runner.invoke(args=["create-admin", "ada", "--role", "analyst", "--site", "shop"])
    result = runner.invoke(args=["list-admins"])
    assert result.exit_code == 0, result.output
    assert "owner@*, analyst@shop" in result.output


def test_create_site_with_a_bad_origin_says_the_fix_in_one_line(runner):
    result = runner.invoke(args=["create-site", "blog", "Blog", "--origin", "blog.example"])
    assert result.exit_code == 1
    assert result.output == (
        "Error: origins: 'blog.example' is not an origin like https://example.com "
        "(no path, no trailing slash).\n"
    )


def test_add_policy_refuses_a_javascript_url(runner, make_site):
    make_site("shop")
    result = runner.invoke(args=["add-policy", "shop", "v2", "--url", "javascript:alert(1)"])
    assert result.exit_code == 1
    assert result.output == (
        "Error: url: Use a full web address starting with https:// or http://.\n"
    )
