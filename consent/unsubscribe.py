"""The link in every marketing email: the person's email preference centre, and one click.

``GET`` shows the preference centre: the site's name, logo and controller, and every
email purpose with its title, description and the person's state, in the reader's
language; it changes nothing (mail scanners prefetch links). A ``POST`` without an
``action`` field is the RFC 8058 one-click opt-out from the email's purpose: recorded
and answered 200, never a redirect, with the same page whatever the token.

The page's own forms post to the same signed link with ``action`` (``unsubscribe``,
``subscribe`` or ``unsubscribe-all``) and ``purpose``. No cookie, no login, no CSRF
token: the signed link is the authority (a mail client's one click carries nothing
else, and nobody without the link can post to it). Besides, a page action must come
from the page itself: one a browser says came from another site is refused and
changes nothing (``consent.pages.is_from_our_page``).

A link we did not sign, or whose site, person or purpose is gone or erased, gets one
neutral page, in the reader's language among the built-in ones (not the site's, which
would tell the sites apart), and changes nothing.
"""

from __future__ import annotations

from flask import Blueprint, render_template, request

from consent.errors import InvalidRequest
from consent.i18n import BUILT_IN_LANGUAGES
from consent.links import public_url
from consent.marketing import (
    MailboxLink,
    change_subscriptions,
    email_subscriptions,
    open_unsubscribe_link,
)
from consent.marketing import unsubscribe as record_unsubscribe
from consent.pages import (
    PAGE_HEADERS,
    branded_page,
    is_from_our_page,
    reader_language,
    render_page,
)

bp = Blueprint("unsubscribe", __name__, url_prefix="/unsubscribe")

#: What each page action asks for, given the link and the ``purpose`` field.
ACTIONS = {
    "unsubscribe": lambda link, key: {key: False},
    "subscribe": lambda link, key: {key: True},
    "unsubscribe-all": lambda link, key: {purpose.key: False for purpose in link.purposes},
}


@bp.get("/<token>")
@branded_page
def confirm(token: str):
    """Show the link's person their email subscriptions; changes nothing."""
    link = open_unsubscribe_link(token)
    if link is None:
        return _neutral_page()
    return _preference_centre(link, token)


@bp.post("/<token>")
@branded_page
def unsubscribe(token: str):
    """Record the one-click opt-out, or the choice made on the preference centre."""
    action = request.form.get("action")
    if action is None:
        record_unsubscribe(token)
        return render_template("unsubscribe/done.html"), 200, PAGE_HEADERS
    link = open_unsubscribe_link(token)
    if link is None:
        return _neutral_page()
    if not is_from_our_page():
        return _preference_centre(link, token, 403, error=True)
    choose = ACTIONS.get(action)
    try:
        if choose is None:
            raise InvalidRequest("action", f"Use one of: {', '.join(ACTIONS)}.")
        choices = choose(link, request.form.get("purpose", ""))
        change_subscriptions(link, choices, language=_language(link))
    except InvalidRequest:
        return _preference_centre(link, token, 422, error=True)
    return _preference_centre(link, token, saved=True)


def _language(link: MailboxLink) -> str:
    return reader_language(link.site.languages, link.site.default_language)


def _preference_centre(link: MailboxLink, token: str, status: int = 200, **notice):
    language = _language(link)
    subscribed = email_subscriptions(link)
    rows = []
    for purpose in link.purposes:
        words = (
            purpose.translations.get(language)
            or purpose.translations.get(link.site.default_language)
            or {}
        )
        rows.append(
            {
                "key": purpose.key,
                "title": words.get("title") or purpose.key,
                "description": words.get("description"),
                "is_subscribed": subscribed[purpose.key],
            }
        )
    return render_page(
        "unsubscribe/preferences.html",
        language,
        status,
        site=link.site,
        rows=rows,
        token=token,
        rights_request_url=public_url("rights_pages.request_form", site_key=link.site.key),
        **notice,
    )


def _neutral_page():
    return render_page("unsubscribe/neutral.html", reader_language(BUILT_IN_LANGUAGES, "en"))
