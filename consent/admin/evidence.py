"""The admin's evidence pages: archived banners, the rights-request register, the access log.

Archived banners are read with the record log (analyst, auditor); rights requests are
handled by the ``rights`` role (auditors may read them); the access log is the
auditor's. Whatever shows a person's identifier is written to the access log.
"""

from __future__ import annotations

import csv
import io
from datetime import timedelta

from flask import Response, abort, flash, redirect, render_template, request, url_for
from sqlalchemy import select

from consent import archive, rights_requests
from consent.accesslog import log_access
from consent.admin import auth, roles
from consent.admin.forms import (
    ANY,
    AccessLogFilterForm,
    RightsActionForm,
    RightsRequestForm,
    start_of,
)
from consent.admin.views import NO_STORE, _attach, _refused, _site_or_404, bp
from consent.db import db
from consent.errors import Conflict, InvalidRequest
from consent.mail import MailUnavailable
from consent.models import AccessLogEntry, Site

ACCESS_LOG_PAGE_SIZE = 100
#: What the access log's action column holds.
ACCESS_ACTIONS = (
    "lookup",
    "export",
    "correct",
    "erase",
    "bulk_check",
    "suppression",
    "rights_request",
    "rights_request_view",
    "rights_request_list",
)


@bp.get("/sites/<site_key>/banner-versions/<config_hash>")
@roles.requires_role(*roles.RECORD_READERS)
def banner_version(site_key: str, config_hash: str):
    """Show an archived banner exactly as a visitor was shown it, in their language."""
    site = _site_or_404(site_key)
    version = archive.find_banner_version(site, config_hash)
    if version is None:
        abort(404, description="This banner configuration was never served for this site.")
    return render_template(
        "admin/banner_version.html",
        site=site,
        version=version,
        shown=archive.rendering(version, request.args.get("lang")),
    )


# --- rights requests --------------------------------------------------------------------


@bp.route("/sites/<site_key>/rights-requests", methods=["GET", "POST"])
@roles.requires_role("rights", "auditor", post=("rights",))
def rights_requests_page(site_key: str):
    """List the site's rights requests, overdue first, and register one that came by email."""
    site = _site_or_404(site_key)
    form = RightsRequestForm()
    status = 200
    if form.validate_on_submit():
        try:
            registered = rights_requests.receive_request(
                site,
                form.kind.data,
                "email",
                auth.actor(),
                email=form.email.data.strip(),
                message=(form.message.data or "").strip() or None,
            )
        except InvalidRequest as error:
            status = _attach(form, error)
        except MailUnavailable as error:
            form.form_errors.append(f"{error} Nothing was registered.")
            status = 503
        else:
            flash(
                f"Request {registered.reference} registered; the verification link was "
                f"emailed. Due {registered.due_at:%Y-%m-%d}."
            )
            return redirect(url_for("admin.rights_requests_page", site_key=site.key))
    elif form.is_submitted():
        status = _refused(form)
    found = rights_requests.site_requests(site)
    return render_template(
        "admin/rights_requests.html",
        site=site,
        form=form,
        overdue=[row for row in found if rights_requests.is_overdue(row)],
        requests=found,
        is_overdue=rights_requests.is_overdue,
    ), status


@bp.route("/sites/<site_key>/rights-requests/<reference>", methods=["GET", "POST"])
@roles.requires_role("rights", "auditor", post=("rights",))
def rights_request(site_key: str, reference: str):
    """Show one request (the view is logged) and take its next step."""
    site = _site_or_404(site_key)
    form = RightsActionForm()
    is_valid = form.validate_on_submit()
    if form.is_submitted() and form.csrf_token.errors:
        abort(400, description="This form has expired; reload the page and try again.")
    found = rights_requests.find_request(reference)
    if found is None or found.site_id != site.id:
        abort(404, description="No such rights request on this site.")
    status = 200
    if is_valid:
        step = form.action.data
        try:
            if step == "extend":
                rights_requests.extend_request(found, form.reason.data, auth.actor())
            elif step == "refuse":
                rights_requests.refuse_request(found, form.reason.data, auth.actor())
            else:
                link = rights_requests.complete_request(found, auth.actor())
                if link and not found.email_encrypted:
                    flash(f"No email on file: hand the person this download link: {link}")
        except InvalidRequest as error:
            status = _attach(form, error)
        except (Conflict, MailUnavailable) as error:
            form.form_errors.append(str(error))
            status = 409 if isinstance(error, Conflict) else 503
        else:
            flash(f"Request {found.reference}: {found.state}.")
            return redirect(
                url_for("admin.rights_request", site_key=site.key, reference=found.reference)
            )
    elif form.is_submitted():
        status = _refused(form)
    if status == 200:
        # The page shows the person's address: who saw it is kept (a failed step rolls back).
        log_access(
            site,
            auth.actor(),
            "rights_request_view",
            found.subject_pseudonym,
            details={"reference": found.reference},
        )
    return (
        render_template(
            "admin/rights_request.html",
            site=site,
            found=found,
            email=rights_requests.email_of(found),
            form=form,
            is_overdue=rights_requests.is_overdue(found),
        ),
        status,
        NO_STORE,
    )


# --- the access log --------------------------------------------------------------------


def _filtered_access_log(form: AccessLogFilterForm):
    query = select(AccessLogEntry, Site.key).join(Site, Site.id == AccessLogEntry.site_id)
    if form.site.data:
        query = query.where(Site.key == form.site.data)
    if form.actor.data:
        query = query.where(AccessLogEntry.actor == form.actor.data.strip())
    if form.action.data:
        query = query.where(AccessLogEntry.action == form.action.data)
    if form.subject.data:
        query = query.where(AccessLogEntry.subject_pseudonym == form.subject.data.strip())
    if form.start.data:
        query = query.where(AccessLogEntry.at >= start_of(form.start.data))
    if form.end.data:
        query = query.where(AccessLogEntry.at < start_of(form.end.data + timedelta(days=1)))
    return query.order_by(AccessLogEntry.at.desc(), AccessLogEntry.id.desc())


def _access_log_form() -> AccessLogFilterForm:
    form = AccessLogFilterForm(request.args)
    form.site.choices = [
        ANY,
        *db.session.scalars(select(Site.key).order_by(Site.key)).all(),
    ]
    form.action.choices = [ANY, *ACCESS_ACTIONS]
    return form


@bp.get("/access-log")
@roles.requires_role("auditor")
def access_log():
    """Who looked at, exported, erased or corrected whom, and when; filterable."""
    form = _access_log_form()
    rows = None
    if form.validate():
        rows = db.session.execute(_filtered_access_log(form).limit(ACCESS_LOG_PAGE_SIZE)).all()
    query = {key: value for key, value in request.args.items() if value}
    return render_template(
        "admin/access_log.html",
        form=form,
        rows=rows,
        query=query,
        page_size=ACCESS_LOG_PAGE_SIZE,
    ), 200 if rows is not None else 422


ACCESS_LOG_COLUMNS = ["at", "site", "sequence", "actor", "action", "subject", "reason", "details"]


@bp.get("/access-log.csv")
@roles.requires_role("auditor")
def access_log_csv():
    """Download the filtered access log as CSV."""
    form = _access_log_form()
    if not form.validate():
        abort(
            422,
            description=" ".join(
                f"{form[name].label.text}: {' '.join(errors)}"
                for name, errors in form.errors.items()
            ),
        )
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(ACCESS_LOG_COLUMNS)
    for entry, site_key in db.session.execute(_filtered_access_log(form)):
        writer.writerow(
            [
                entry.at.isoformat(),
                site_key,
                entry.sequence,
                entry.actor,
                entry.action,
                entry.subject_pseudonym or "",
                entry.reason or "",
                "; ".join(f"{name}: {value}" for name, value in entry.details.items()),
            ]
        )
    return Response(
        out.getvalue(),
        mimetype="text/csv",
        headers={**NO_STORE, "Content-Disposition": 'attachment; filename="access-log.csv"'},
    )
