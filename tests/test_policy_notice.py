"""Notice of changes: the policy's Last Updated date, its URL and the SHA-256 of its text."""

from __future__ import annotations

import hashlib

from helpers import bearer

from consent.db import now_utc


def test_add_policy_keeps_the_sha256_of_the_text(client, runner, make_site, make_key, tmp_path):
    site = make_site("shop")
    policy = tmp_path / "policy.html"
    policy.write_bytes(b"<h1>Privacy policy</h1>\n")
    result = runner.invoke(
        args=[
            "add-policy",
            site,
            "v2",
            "--url",
            "https://shop.example/privacy",
            "--text-file",
            str(policy),
        ]
    )
    assert result.exit_code == 0, result.output
    digest = hashlib.sha256(policy.read_bytes()).hexdigest()
    assert f"Text SHA-256: {digest}" in result.output
    config = client.get(f"/v1/sites/{site}/config").get_json()
    assert config["policy"]["url"] == "https://shop.example/privacy"
    assert config["policy"]["text_sha256"] == digest
    assert config["policy"]["updated_at"] == now_utc().date().isoformat()
    archived = client.get(
        f"/v1/server/banner-versions/{config['config_hash']}",
        headers=bearer(make_key(site, "read")),
    ).get_json()
    assert archived["policy"]["text_sha256"] == digest


def test_a_missing_text_file_is_explained(runner, make_site):
    result = runner.invoke(args=["add-policy", make_site("shop"), "v2", "--text-file", "/nope"])
    assert result.exit_code == 2
    assert "No such file or directory" in result.output


def test_the_policy_page_shows_its_last_updated_date(client, runner, demo_site):
    assert runner.invoke(args=["add-policy", demo_site, "v9"]).exit_code == 0
    today = now_utc().date()
    page = client.get("/privacy").text
    assert f'Last Updated: <time datetime="{today.isoformat()}">{today:%-d %B %Y}</time>' in page
