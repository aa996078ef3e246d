"""Security headers (flask-talisman) and trusting the right number of proxies."""

from __future__ import annotations

import functools
import inspect

from flask import Flask
from flask_talisman import Talisman
from werkzeug.middleware.proxy_fix import ProxyFix

talisman = Talisman()

#: Strict by default: no inline script or style, no framing, no base-tag tricks.
CONTENT_SECURITY_POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "connect-src": "'self'",
    "frame-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}

#: Blueprints whose responses must never be redirected to HTTPS: API clients and
#: mail clients do not follow a 302 on POST, and the widget is loaded by other sites.
NEVER_REDIRECTED = ("public.", "server.", "wellknown.", "widget.", "unsubscribe.", "api-docs.")


def init_security(app: Flask) -> None:
    """Apply security headers to every response and honour trusted proxies."""
    if app.config["TRUSTED_PROXIES"]:
        count = int(app.config["TRUSTED_PROXIES"])
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=count, x_host=count)
    talisman.init_app(
        app,
        force_https=app.config["FORCE_HTTPS"],
        strict_transport_security=True,
        strict_transport_security_max_age=31536000,
        content_security_policy=CONTENT_SECURITY_POLICY,
        content_security_policy_nonce_in=["script-src"],
        frame_options="DENY",
        referrer_policy="strict-origin-when-cross-origin",
        session_cookie_secure=app.config["FORCE_HTTPS"],
        session_cookie_http_only=True,
        session_cookie_samesite="Lax",
    )


def exempt_from_https_redirect(app: Flask) -> None:
    """Mark API, widget and unsubscribe views so Talisman never redirects them."""
    for endpoint, view in app.view_functions.items():
        if endpoint.startswith(NEVER_REDIRECTED):
            if inspect.ismethod(view):
                # Bound methods take no attributes: stand a plain function in for them.
                view = app.view_functions[endpoint] = functools.wraps(view)(functools.partial(view))
            options = dict(getattr(view, "talisman_view_options", {}))
            options["force_https"] = False
            view.talisman_view_options = options
