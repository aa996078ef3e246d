"""The one module of validation rules, and every caller using its patterns."""

from __future__ import annotations

import pytest

from consent import schemas, sites, validation
from consent.admin import forms
from consent.api import fastpath
from consent.db import db
from consent.errors import InvalidRequest


@pytest.mark.parametrize(
    ("caller_pattern", "rule"),
    [
        (schemas.KEY.regex, validation.PURPOSE_KEY),
        (schemas.LANGUAGE.regex, validation.LANGUAGE_TAG),
        (forms.SITE_KEY_PATTERN, validation.SITE_KEY),
        (forms.PURPOSE_KEY_PATTERN, validation.PURPOSE_KEY),
        (forms.LANGUAGE_PATTERN, validation.LANGUAGE_TAG),
        (fastpath.PLAIN_VALUE, validation.PURPOSE_KEY),
        (fastpath.SITE_KEY, validation.SITE_KEY),
        (sites.SITE_KEY_PATTERN, validation.SITE_KEY),
        (sites.ORIGIN_PATTERN, validation.ORIGIN),
    ],
)
def test_every_caller_uses_the_one_pattern(caller_pattern, rule):
    assert caller_pattern is rule


@pytest.mark.parametrize(
    ("check", "value", "expected"),
    [
        (validation.is_site_key, "shop", True),
        (validation.is_site_key, "s", False),
        (validation.is_site_key, "shop\n", False),
        (validation.is_site_key, "Shop", False),
        (validation.is_purpose_key, "stats", True),
        (validation.is_purpose_key, "ga4.ads", True),
        (validation.is_purpose_key, "stats\n", False),
        (validation.is_purpose_key, "-stats", False),
        (validation.is_purpose_key, None, False),
        (validation.is_language_tag, "en", True),
        (validation.is_language_tag, "pt-BR", True),
        (validation.is_language_tag, "en\n", False),
        (validation.is_language_tag, "['en']", False),
        (validation.is_origin, "https://shop.example", True),
        (validation.is_origin, "http://127.0.0.1:5502", True),
        (validation.is_origin, "https://shop.example/", False),
        (validation.is_origin, "shop.example", False),
        (validation.is_web_url, "https://shop.example/privacy", True),
        (validation.is_web_url, "http://shop.example", True),
        (validation.is_web_url, "javascript:alert(1)", False),
        (validation.is_web_url, "JAVASCRIPT:alert(1)", False),
        (validation.is_web_url, "data:text/html,hi", False),
        (validation.is_web_url, "/privacy", False),
        (validation.is_web_url, "https:///nohost", False),
        (validation.is_web_url, "https://shop.example/a b", False),
        (validation.is_email, "ada@example.com", True),
        (validation.is_email, "ada@@example.com", False),
        (validation.is_email, "ada @example.com", False),
        (validation.is_email, "ada@example\u200b.com", False),
        (validation.is_email, None, False),
    ],
)
def test_rule_accepts_or_refuses(check, value, expected):
    assert check(value) is expected


def test_a_broken_rule_raises_one_error_naming_the_field():
    with pytest.raises(validation.InvalidValue) as raised:
        validation.validate_purpose_key("stats\n", "services")
    assert isinstance(raised.value, ValueError)
    assert isinstance(raised.value, InvalidRequest)
    assert raised.value.field == "services"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"key": "stats\n"}, "key"),
        ({"key": "video", "translations": {"english": {"title": "Video"}}}, "translations"),
        (
            {"key": "video", "services": [{"key": "yt", "policy_url": "javascript:alert(1)"}]},
            "services",
        ),
        ({"key": "video", "services": [{"key": "Bad Key"}]}, "services"),
        ({"key": "video", "consent_mode": ["everything"]}, "consent_mode"),
    ],
)
def test_set_purpose_refuses_bad_values_without_a_form(app, make_site, fields, field):
    key = make_site("shop")
    with app.app_context():
        site = sites.get_site_by_key(key)
        with pytest.raises(InvalidRequest) as raised:
            values = dict(fields)
            sites.set_purpose(site, values.pop("key"), **values)
        assert raised.value.field == field
        db.session.rollback()


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"key": "shop\n"}, "key"),
        ({"origins": ["https://shop.example/"]}, "origins"),
        ({"languages": ["['en']"]}, "languages"),
        ({"texts": {"english": {"title": "Hi"}}}, "texts"),
    ],
)
def test_create_site_refuses_bad_values_without_a_form(app, settings, field):
    with app.app_context():
        with pytest.raises(InvalidRequest) as raised:
            values = dict(settings)
            sites.create_site(values.pop("key", "shop"), "Shop", **values)
        assert raised.value.field == field


def test_publish_policy_refuses_a_javascript_url(app, make_site):
    key = make_site("shop")
    with app.app_context():
        with pytest.raises(InvalidRequest) as raised:
            sites.publish_policy(sites.get_site_by_key(key), "v9", url="javascript:alert(1)")
        assert raised.value.field == "url"
