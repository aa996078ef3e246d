"""The banner's built-in languages: its texts and the standard purposes' titles.

``consent/data/translations.json`` holds, per language, every banner text and the title
and description of the four standard purposes; a test fails if any language lacks a key,
so no banner is ever half translated. A site's own texts override these per language.
"""

from __future__ import annotations

import json
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


def purpose_translations(purpose_key: str) -> dict[str, dict[str, str]]:
    """Return a standard purpose's title and description in every built-in language."""
    return {
        language: dict(zip(("title", "description"), entry["purposes"][purpose_key], strict=True))
        for language, entry in _DATA.items()
    }
