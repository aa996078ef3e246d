"""Built-in languages: every one complete, so no banner is ever half translated."""

import re

import pytest

from consent.i18n import (
    BANNER_TEXTS,
    BUILT_IN_LANGUAGES,
    PAGE_TEXT_KEYS,
    PAGE_TEXTS,
    TEXT_KEYS,
    purpose_translations,
)
from consent.sites import STANDARD_PURPOSES

EU_OFFICIAL = "bg cs da de el en es et fi fr ga hr hu it lt lv mt nl pl pt ro sk sl sv".split()


def test_the_eu_languages_norwegian_and_icelandic_are_built_in():
    assert set(BUILT_IN_LANGUAGES) == {*EU_OFFICIAL, "no", "is"}
    assert BUILT_IN_LANGUAGES[0] == "en"


@pytest.mark.parametrize("language", BUILT_IN_LANGUAGES)
def test_every_language_has_every_banner_text(language):
    texts = BANNER_TEXTS[language]
    assert tuple(texts) == TEXT_KEYS
    assert all(value.strip() for value in texts.values())
    assert "{service}" in texts["placeholder"] and "{purpose}" in texts["placeholder"]
    assert "{date}" in texts["last_updated"]


@pytest.mark.parametrize("purpose", [purpose["key"] for purpose in STANDARD_PURPOSES])
def test_every_standard_purpose_is_titled_and_described_in_every_language(purpose):
    translations = purpose_translations(purpose)
    assert set(translations) == set(BUILT_IN_LANGUAGES)
    for language, entry in translations.items():
        assert entry["title"].strip() and entry["description"].strip(), language


def test_a_new_site_offers_every_built_in_language(client, runner):
    result = runner.invoke(args=["create-site", "shop", "Shop"])
    assert result.exit_code == 0, result.output
    config = client.get("/v1/sites/shop/config").get_json()
    assert config["languages"] == list(BUILT_IN_LANGUAGES)
    assert config["texts"]["de"]["reject_all"] == "Alle ablehnen"
    analytics = next(p for p in config["purposes"] if p["key"] == "analytics")
    assert analytics["translations"]["pl"]["title"] == "Analityczne"


@pytest.mark.parametrize("language", BUILT_IN_LANGUAGES)
def test_every_language_has_every_page_text_with_its_placeholders(language):
    texts = PAGE_TEXTS[language]
    assert tuple(texts) == PAGE_TEXT_KEYS
    assert all(value.strip() for value in texts.values())
    for key, english in PAGE_TEXTS["en"].items():
        assert re.findall(r"\{\w+\}", texts[key]) == re.findall(r"\{\w+\}", english), key
