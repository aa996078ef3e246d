"""The pages a person reaches from a rights-request email: confirm it, download the data.

``GET`` of the confirmation link only shows a button (mail scanners prefetch links);
``POST`` verifies. As for unsubscribe links, the signed token is the authority: no
cookie, no login, no CSRF token. Every token, valid or not, gets an answer that tells
nothing about which requests exist.
"""

from __future__ import annotations

import json

from flask import Blueprint, Response, render_template

from consent import rights_requests

bp = Blueprint("rights_pages", __name__, url_prefix="/rights")

PAGE_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


@bp.get("/verify/<token>")
def confirm(token: str):
    """Ask the person to confirm the request; changes nothing."""
    return render_template("rights/confirm.html", token=token), 200, PAGE_HEADERS


@bp.post("/verify/<token>")
def verify(token: str):
    """Mark the request verified: the person holds the address it was sent to."""
    request = rights_requests.verify_by_link(token)
    status = 200 if request is not None else 404
    return render_template("rights/verified.html", request=request), status, PAGE_HEADERS


@bp.get("/download/<token>")
def download(token: str):
    """Hand the person their data, from the expiring link in the completion email."""
    export = rights_requests.download_export(token)
    if export is None:
        return render_template("rights/verified.html", request=None), 404, PAGE_HEADERS
    return Response(
        json.dumps(export, indent=2, ensure_ascii=False, default=str),
        mimetype="application/json",
        headers={**PAGE_HEADERS, "Content-Disposition": 'attachment; filename="my-data.json"'},
    )
