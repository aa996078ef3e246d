"""What integrators read: the API reference page, and the widget's TypeScript types.

The reference is Swagger UI over the served OpenAPI document.

Swagger UI's files come from the swagger-ui-bundle-v2 package (vendored in the wheel,
no CDN) and are served from this blueprint; the page starts it with a small script of
our own, so the strict CSP (no inline script or style) holds here too.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, current_app, render_template, send_from_directory, url_for
from swagger_ui_bundle import swagger_ui_path

bp = Blueprint(
    "api-reference",
    __name__,
    static_folder=swagger_ui_path,
    static_url_path="/v1/docs/assets",
)


@bp.get("/v1/docs")
def api_reference():
    """Show the API reference, generated from the OpenAPI document."""
    return render_template("api_docs.html", spec_url=url_for("api-docs.openapi_json"))


@bp.get("/widget/consent.d.ts")
def widget_types():
    """Serve the TypeScript declarations of ``window.Consent`` and its events."""
    response = send_from_directory(
        Path(current_app.static_folder) / "widget",
        "consent.d.ts",
        mimetype="application/typescript",
        max_age=3600,
    )
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response
