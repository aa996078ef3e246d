"""The built-in languages: the banner's texts, the standard purposes' titles, the pages'.

``consent/data/translations.json`` holds, per language, every banner text, the title
and description of the four standard purposes and the texts of the service's own pages
(email preferences, privacy requests); a test fails if any language lacks a key, so no
banner or page is ever half translated. A site's own texts override the banner's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

_DATA = json.loads((Path(__file__).parent / "data" / "translations.json").read_text("utf-8"))

#: The 24 official EU languages, Norwegian and Icelandic; English first (the default).
BUILT_IN_LANGUAGES: tuple[str, ...] = tuple(_DATA)
#: Banner texts per language: {"fr": {"title": ..., "accept_all": ...}}.
BANNER_TEXTS: dict[str, dict[str, str]] = {
    language: entry["texts"] for language, entry in _DATA.items()
}
#: The keys every language has (and a site may override).
TEXT_KEYS: tuple[str, ...] = tuple(BANNER_TEXTS["en"])
#: The service's own pages' texts per language (not overridden by sites).
PAGE_TEXTS: dict[str, dict[str, str]] = {
    language: entry["pages"] for language, entry in _DATA.items()
}
PAGE_TEXT_KEYS: tuple[str, ...] = tuple(PAGE_TEXTS["en"])
#: Language tags that name another one the banner speaks (Norwegian Bokmål and Nynorsk).
LANGUAGE_ALIASES = {"nb": "no", "nn": "no"}


def pick_language(wanted: Iterable[str], offered: Sequence[str], default: str) -> str:
    """Return the first wanted language offered (as the widget picks), else ``default``:
    ``fr-CA`` matches ``fr``, ``nb`` matches ``no``."""
    for tag in wanted:
        tag = tag.strip().lower()
        base = tag.split("-")[0]
        for candidate in (tag, base, LANGUAGE_ALIASES.get(base)):
            if candidate in offered:
                return candidate
    return default


def page_texts(language: str) -> dict[str, str]:
    """The service's page texts (and the banner's) in a built-in language, else English."""
    return {
        **BANNER_TEXTS.get(language, BANNER_TEXTS["en"]),
        **PAGE_TEXTS.get(language, PAGE_TEXTS["en"]),
    }


def purpose_translations(purpose_key: str) -> dict[str, dict[str, str]]:
    """Return a standard purpose's title and description in every built-in language."""
    return {
        language: dict(zip(("title", "description"), entry["purposes"][purpose_key], strict=True))
        for language, entry in _DATA.items()
    }
