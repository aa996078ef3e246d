"""A person's pages for rights requests: the form to make one, and the emailed links.

``/privacy/<site>`` is the short, stable link the banner and the email preference
centre give: a form (no script) that registers the request as the public API does and
emails the link that verifies it. It sets no cookie: a post that a browser says came
from another site is refused (``consent.pages.is_from_our_page``), which is what a CSRF
token would prevent. It is rate-limited per address and site like the API, and speaks
the reader's language.

``GET`` of the confirmation link only shows a button (mail scanners prefetch links);
``POST`` verifies. As for unsubscribe links, the signed token is the authority: no
cookie, no login, no CSRF token. Every token, valid or not, gets an answer that tells
nothing about which requests exist.
"""

from __future__ import annotations

import json
import logging

from flask import Blueprint, Response, render_template, request
from flask_wtf import FlaskForm
from wtforms import RadioField, StringField, TextAreaField
from wtforms.validators import InputRequired, Optional
from wtforms.validators import ValidationError as FieldError

from consent import rights_requests, validation
from consent.errors import InvalidRequest
from consent.i18n import BUILT_IN_LANGUAGES
from consent.mail import MailUnavailable
from consent.models import RIGHTS_KINDS
from consent.pages import (
    PAGE_HEADERS,
    branded_page,
    is_from_our_page,
    reader_language,
    render_page,
)
from consent.sites import get_site_by_key

log = logging.getLogger(__name__)
bp = Blueprint("rights_pages", __name__)


class RightsRequestForm(FlaskForm):
    """What a person asks for, and where the verification link goes."""

    class Meta:
        csrf = False  # no session to keep a token in: see is_from_our_page

    kind = RadioField(choices=list(RIGHTS_KINDS), validators=[InputRequired()])
    email = StringField(validators=[InputRequired()])
    message = TextAreaField(validators=[Optional()])

    def validate_email(self, field):
        _by_the_rule(validation.validate_email, field)

    def validate_message(self, field):
        _by_the_rule(validation.validate_length, field, maximum=validation.MAX_TEXT_LENGTH)


def _by_the_rule(validate, field, **bounds) -> None:
    """Check a field by the rule everything else uses (``consent.validation``)."""
    try:
        validate(field.data, field.name, **bounds)
    except validation.InvalidValue as error:
        raise FieldError(error.message) from None


#: The page text that tells a reader what is wrong with each field.
FIELD_ERRORS = {
    "kind": "error_kind",
    "email": "error_email",
    "message": "error_message",
}


@bp.route("/privacy/<site_key>", methods=["GET", "POST"])
@branded_page
def request_form(site_key: str):
    """Take a person's rights request; the address given gets a link to confirm it."""
    site = get_site_by_key(site_key)
    if site is None:
        language = reader_language(BUILT_IN_LANGUAGES, "en")
        return render_page("rights/unknown.html", language, 404)
    language = reader_language(site.languages, site.default_language)
    form = RightsRequestForm()
    if form.is_submitted() and not is_from_our_page():
        return _form_page(form, site, language, 403, problem="error_resend")
    if not form.validate_on_submit():
        return _form_page(form, site, language, 422 if form.is_submitted() else 200)
    try:
        rights_requests.receive_request(
            site,
            form.kind.data,
            "web",
            "person",
            email=form.email.data,
            message=form.message.data,
        )
    except InvalidRequest as error:
        form[error.field if error.field in FIELD_ERRORS else "email"].errors = [error.message]
        return _form_page(form, site, language, 422)
    except MailUnavailable as error:
        log.error("mail not sent on %s: %s", request.endpoint, error)
        return _form_page(form, site, language, 503, problem="mail_down")
    return render_page("rights/sent.html", language, site=site)


@bp.errorhandler(429)
def _too_many(error):
    """The rate limit's refusal, on the form's page (Retry-After comes from the limiter)."""
    site = get_site_by_key((request.view_args or {}).get("site_key", ""))
    if site is None:
        return error
    language = reader_language(site.languages, site.default_language)
    return _form_page(RightsRequestForm(), site, language, 429, problem="too_many")


def _form_page(form: RightsRequestForm, site, language: str, status: int, problem=None):
    failed = [FIELD_ERRORS[name] for name in FIELD_ERRORS if form[name].errors]
    return render_page(
        "rights/request.html",
        language,
        status,
        form=form,
        site=site,
        kinds=RIGHTS_KINDS,
        failed=failed,
        problem=problem,
    )


@bp.get("/rights/verify/<token>")
def confirm(token: str):
    """Ask the person to confirm the request; changes nothing."""
    return render_template("rights/confirm.html", token=token), 200, PAGE_HEADERS


@bp.post("/rights/verify/<token>")
def verify(token: str):
    """Mark the request verified: the person holds the address it was sent to."""
    request = rights_requests.verify_by_link(token)
    status = 200 if request is not None else 404
    return render_template("rights/verified.html", request=request), status, PAGE_HEADERS


@bp.get("/rights/download/<token>")
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
