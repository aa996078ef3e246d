"""What the service's own pages for people share: language, headers, forms' origin.

The pages a person reaches from an email or from a banner (email preferences, privacy
requests) speak the reader's language, picked as the banner picks it: ``?lang=``
(comma-separated, best first), then the browser's Accept-Language. They are never
cached, and the tokens in their URLs never travel in a Referer: each page says
``<meta name="referrer" content="no-referrer">``, as Talisman sets one Referrer-Policy
header for every answer and cannot be told otherwise per view.

They set no cookie (the service keeps none outside the admin), so their forms are
protected from cross-site posts by what the browser says of a request's origin
(``Sec-Fetch-Site``, else ``Origin``), not by a token in a session.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from flask import current_app, render_template, request

from consent.i18n import page_texts, pick_language
from consent.security import CONTENT_SECURITY_POLICY, talisman
from consent.validation import is_language_tag

PAGE_HEADERS = {"Cache-Control": "no-store"}

#: A page that shows the site's logo, wherever on the web the site keeps it.
branded_page = talisman(
    content_security_policy={**CONTENT_SECURITY_POLICY, "img-src": "'self' data: https: http:"}
)


def reader_language(offered: Sequence[str], default: str) -> str:
    """The reader's language among those offered: ``?lang=``, then Accept-Language."""
    asked = [tag for tag in request.args.get("lang", "").split(",") if is_language_tag(tag)]
    asked += [tag for tag, _ in request.accept_languages]
    return pick_language(asked, offered, default)


def render_page(template: str, language: str, status: int = 200, **context):
    """A page in ``language``, its texts as ``t``, with the pages' headers."""
    page = render_template(template, lang=language, t=page_texts(language), **context)
    return page, status, PAGE_HEADERS


def is_from_our_page() -> bool:
    """Whether a form post came from one of our pages, as far as the browser tells.

    A browser names the sending site in ``Sec-Fetch-Site``; an older one names the
    origin, or "null" from our pages, which send no Referer. A client that says neither
    is no browser another site could drive, and is let through.
    """
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        return fetch_site == "same-origin"
    origin = request.headers.get("Origin")
    ours = urlsplit(current_app.config["PUBLIC_URL"])
    return origin in (None, "null", f"{ours.scheme}://{ours.netloc}")
