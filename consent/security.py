"""Security headers (flask-talisman) and trusting the right number of proxies."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

from flask import Flask
from flask_talisman import Talisman
from flask_talisman.talisman import NONCE_LENGTH, get_random_string
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
NEVER_REDIRECTED = (
    "public.",
    "server.",
    "wellknown.",
    "widget.",
    "unsubscribe.",
    "api-docs.",
    "ops.",
)


def init_security(app: Flask) -> None:
    """Apply security headers to every response (``trust_proxies`` comes last)."""
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


def trust_proxies(app: Flask) -> None:
    """Honour ``TRUSTED_PROXIES``; outermost, so every layer sees the real client."""
    if app.config["TRUSTED_PROXIES"]:
        count = int(app.config["TRUSTED_PROXIES"])
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=count, x_host=count)


#: Talisman settings ``headers_outside_flask`` does not reproduce: it refuses to start.
_NOT_REPRODUCED = (
    "feature_policy",
    "document_policy",
    "x_xss_protection",
    "force_file_save",
    "content_security_policy_report_uri",
    "content_security_policy_report_only",
)


def headers_outside_flask() -> Callable[[dict], list[tuple[str, str]]]:
    """Talisman's headers for an answer given without Flask (the check's fast path).

    Read from the Talisman settings ``init_security`` made, in Talisman's order, with a
    fresh CSP nonce each time; ``tests/test_fastpath.py`` compares them with Flask's.
    """
    unsupported = [name for name in _NOT_REPRODUCED if getattr(talisman, name, None)]
    if unsupported:
        raise RuntimeError(f"the check's fast path cannot reproduce Talisman's {unsupported}")
    before_csp = []
    if talisman.permissions_policy:
        policy = talisman.permissions_policy
        if not isinstance(policy, str):
            policy = ", ".join(f"{name}={value}" for name, value in policy.items())
        before_csp.append(("Permissions-Policy", policy))
    if talisman.frame_options:
        before_csp.append(("X-Frame-Options", talisman.frame_options))
    if talisman.x_content_type_options:
        before_csp.append(("X-Content-Type-Options", "nosniff"))
    policy = talisman.content_security_policy
    if isinstance(policy, str):
        raise RuntimeError("the check's fast path needs the CSP as a dict of sections")
    nonce_in = talisman.content_security_policy_nonce_in or []
    hsts = f"max-age={talisman.strict_transport_security_max_age}"
    if talisman.strict_transport_security_include_subdomains:
        hsts += "; includeSubDomains"
    if talisman.strict_transport_security_preload:
        hsts += "; preload"
    referrer = ("Referrer-Policy", talisman.referrer_policy)

    def headers(environ: dict) -> list[tuple[str, str]]:
        answer = list(before_csp)
        if policy:
            nonce = get_random_string(NONCE_LENGTH) if nonce_in else None
            answer.append(
                (
                    "Content-Security-Policy",
                    "; ".join(
                        f"{section} {_joined(content)}"
                        + (f" 'nonce-{nonce}'" if section in nonce_in else "")
                        for section, content in policy.items()
                    ),
                )
            )
        is_secure = environ.get("wsgi.url_scheme") == "https"
        if talisman.strict_transport_security and (
            is_secure or environ.get("HTTP_X_FORWARDED_PROTO", "http") == "https"
        ):
            answer.append(("Strict-Transport-Security", hsts))
        answer.append(referrer)
        return answer

    return headers


def _joined(content: str | list[str]) -> str:
    return content if isinstance(content, str) else " ".join(content)


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
