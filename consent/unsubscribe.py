"""One-click unsubscribe pages (RFC 8058): the links in marketing emails lead here.

``GET`` only shows a confirmation form (mail scanners prefetch links). ``POST`` records
the opt-out and answers 200, never a redirect. Every token, valid or not, gets the same
page, so the route tells nobody which links are real. No cookie, no login and no CSRF
token on purpose: the signed link is the authority, and a mail client's one-click POST
carries nothing else.
"""

from __future__ import annotations

from flask import Blueprint, render_template

from consent.marketing import unsubscribe as record_unsubscribe

bp = Blueprint("unsubscribe", __name__, url_prefix="/unsubscribe")

#: Mail clients and people alike must never have this page cached or framed.
PAGE_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


@bp.get("/<token>")
def confirm(token: str):
    """Ask the reader to confirm; changes nothing."""
    return render_template("unsubscribe/confirm.html", token=token), 200, PAGE_HEADERS


@bp.post("/<token>")
def unsubscribe(token: str):
    """Record the opt-out (one click from the mail client, or the confirm button)."""
    record_unsubscribe(token)
    return render_template("unsubscribe/done.html"), 200, PAGE_HEADERS
