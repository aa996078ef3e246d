"""The admin's webhook pages: endpoints, the delivery log, send again.

Editors and auditors read them; changing webhooks needs the "editor" role.
"""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, url_for

from consent import webhooks
from consent.admin import roles
from consent.admin.forms import ActionForm, WebhookForm
from consent.admin.views import (
    NO_STORE,
    _attach,
    _refused,
    _require_valid,
    _site_or_404,
    bp,
)
from consent.db import db
from consent.errors import InvalidRequest
from consent.models import Site, WebhookDelivery, WebhookEndpoint


@bp.route("/sites/<site_key>/webhooks", methods=["GET", "POST"])
@roles.requires_role(*roles.SETUP_READERS, post=("editor",))
def webhooks_page(site_key: str):
    """List a site's webhook endpoints and deliveries; add an endpoint (secret shown once)."""
    site = _site_or_404(site_key)
    form = WebhookForm()
    secret = None
    status = 200
    if form.validate_on_submit():
        try:
            _, secret = webhooks.add_endpoint(
                site,
                form.url.data.strip(),
                form.events.data,
                is_email_included=form.include_email.data,
            )
        except InvalidRequest as error:
            status = _attach(form, error)
        else:
            form = WebhookForm(formdata=None)
    elif form.is_submitted():
        status = _refused(form)
    return (
        render_template(
            "admin/webhooks.html",
            site=site,
            form=form,
            secret=secret,
            endpoints=webhooks.endpoints_of(site),
            deliveries=webhooks.recent_deliveries(site),
        ),
        status,
        NO_STORE,
    )


def _endpoint_or_404(site: Site, endpoint_id: int) -> WebhookEndpoint:
    endpoint = db.session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None or endpoint.site_id != site.id:
        abort(404, description="No such webhook endpoint on this site.")
    return endpoint


@bp.post("/sites/<site_key>/webhooks/<int:endpoint_id>/active")
@roles.requires_role("editor")
def toggle_webhook(site_key: str, endpoint_id: int):
    """Pause or resume an endpoint: paused, it gets no new events."""
    site = _site_or_404(site_key)
    _require_valid(ActionForm())
    endpoint = _endpoint_or_404(site, endpoint_id)
    webhooks.set_endpoint_active(endpoint, not endpoint.is_active)
    flash(f"Webhook {endpoint.url} {'paused' if endpoint.is_active else 'resumed'}.")
    return redirect(url_for("admin.webhooks_page", site_key=site.key))


@bp.post("/sites/<site_key>/webhooks/deliveries/<int:delivery_id>/again")
@roles.requires_role("editor")
def send_webhook_again(site_key: str, delivery_id: int):
    """Queue a delivery's event for its endpoint once more."""
    site = _site_or_404(site_key)
    _require_valid(ActionForm())
    delivery = db.session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.endpoint.site_id != site.id:
        abort(404, description="No such delivery on this site.")
    webhooks.send_again(delivery)
    flash(f"{delivery.event.type} queued again for {delivery.endpoint.url}.")
    return redirect(url_for("admin.webhooks_page", site_key=site.key))
