"""The API reference page: Swagger UI over the served OpenAPI document.

Swagger UI's files come from the swagger-ui-bundle-v2 package (vendored in the wheel,
no CDN) and are served from this blueprint; the page starts it with a small script of
our own, so the strict CSP (no inline script or style) holds here too.
"""

from __future__ import annotations

from flask import Blueprint, render_template, url_for
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
