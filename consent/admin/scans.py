"""The admin's Scans pages: history, one scan's findings and changes, starting a scan.

Editors and auditors read them; starting a scan and adding to the inventory need the
"editor" role of the site.
"""

from __future__ import annotations

from flask import (
    abort,
    after_this_request,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)

from consent.admin import roles
from consent.admin.forms import PurposeForm, ScanForm
from consent.admin.views import _attach, _refused, _site_or_404, bp
from consent.db import db
from consent.errors import InvalidRequest
from consent.models import Scan, Site
from consent.scan import store
from consent.scan.background import start_in_background
from consent.scan.findings import LEVELS
from consent.scan.observations import PASS_TITLES
from consent.scan.report import short_page

#: Pages that show a running scan reload themselves this often (seconds).
REFRESH_SECONDS = 3


def _scan_or_404(site: Site, scan_id: int) -> Scan:
    scan = db.session.get(Scan, scan_id)
    if scan is None or scan.site_id != site.id:
        abort(404, description=f"No scan {scan_id} of this site.")
    return scan


def _template_values(site: Site) -> dict:
    return {
        "site": site,
        "levels": list(reversed(LEVELS)),
        "pass_titles": PASS_TITLES,
        "short_page": short_page,
    }


@bp.route("/sites/<site_key>/scans", methods=["GET", "POST"])
@roles.requires_role(*roles.SETUP_READERS, post=("editor",))
def scans(site_key: str):
    """List a site's scans, and start one in the background."""
    site = _site_or_404(site_key)
    form = ScanForm(data={"urls": "\n".join(f"{origin}/" for origin in site.allowed_origins)})
    status = 200
    if form.validate_on_submit():
        try:
            plan = store.plan_scan(site, form.url_list, max_pages=form.pages.data)
        except InvalidRequest as error:
            status = _attach(form, error)
        else:
            scan = store.start_scan(plan, site, f"admin:{g.admin.name}")

            @after_this_request
            def _start(response):
                if response.status_code < 400:  # committed: the process can read the row
                    start_in_background(scan, plan)
                return response

            flash(f"Scan #{scan.id} started.")
            return redirect(url_for("admin.scan", site_key=site.key, scan_id=scan.id))
    elif form.is_submitted():
        status = _refused(form)
    return (
        render_template(
            "admin/scans.html", form=form, scans=store.list_scans(site), **_template_values(site)
        ),
        status,
    )


@bp.get("/sites/<site_key>/scans/<int:scan_id>")
@roles.requires_role(*roles.SETUP_READERS)
def scan(site_key: str, scan_id: int):
    """Show one scan: its findings, what changed since the previous one, its problems."""
    site = _site_or_404(site_key)
    scan = _scan_or_404(site, scan_id)
    previous = store.previous_scan(scan)
    is_stalled = store.is_stalled(scan)
    return render_template(
        "admin/scan.html",
        scan=scan,
        previous=previous,
        changes=store.compare_scans(scan, previous) if scan.status == "done" else None,
        cookie_purposes=[p for p in site.purposes if p.kind == "cookie"],
        is_stalled=is_stalled,
        refresh=REFRESH_SECONDS if scan.status == "running" and not is_stalled else None,
        **_template_values(site),
    )


@bp.get("/sites/<site_key>/scans/<int:scan_id>/inventory/<purpose_key>")
@roles.requires_role("editor")
def add_to_inventory(site_key: str, scan_id: int, purpose_key: str):
    """Show a purpose's form with the scan's suggested cookie rows added, to confirm."""
    site = _site_or_404(site_key)
    scan = _scan_or_404(site, scan_id)
    purpose = next((p for p in site.purposes if p.key == purpose_key), None)
    if purpose is None:
        abort(404, description=f"No purpose {purpose_key!r} on this site.")
    names = request.args.getlist("cookie") or None
    rows = store.suggested_rows(scan, purpose, names)
    form = PurposeForm.from_purpose(purpose, site.languages)
    del form.key
    for row in rows:
        form.cookies.append_entry({**row, "domain": None, "path": None})
    flash(
        f"{len(rows)} cookie row(s) from scan #{scan.id} added below: check them, then save."
        if rows
        else f"Scan #{scan.id} suggests no new cookie rows for {purpose.key!r}."
    )
    return render_template(
        "admin/purpose_form.html",
        site=site,
        purpose=purpose,
        form=form,
        action=url_for("admin.edit_purpose", site_key=site.key, purpose_key=purpose.key),
    )
