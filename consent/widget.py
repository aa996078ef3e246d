"""Serve the embeddable banner (static/widget/) and the demo shop page.

The files in ``static/widget/`` are the readable source. What pages download is that
source with comments and indentation removed, compressed once per process: no build
step, and the size benchmark (``bench/widget_size.py``) measures exactly these bytes.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from flask import Blueprint, Response, current_app, render_template, request
from markupsafe import Markup, escape

from consent.security import CONTENT_SECURITY_POLICY, talisman

bp = Blueprint("widget", __name__)

ASSETS = {"consent.js": "text/javascript", "consent.css": "text/css"}
#: Unversioned URLs are revalidated daily (ETag); ``?v=<version>`` URLs never change.
CACHE_UNVERSIONED = "public, max-age=86400, stale-while-revalidate=604800"
CACHE_VERSIONED = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class Asset:
    """One served widget file: its bytes, their gzip, a version and an SRI hash."""

    body: bytes
    gzipped: bytes
    version: str
    integrity: str


def compact_js(source: str) -> str:
    """Drop whole-line comments, trailing ``// `` comments after code, and indentation.

    Deliberately simple: the widget's source keeps comments on their own lines or after
    ``;``, ``{``, ``,`` or ``)``, and no string in it contains such a sequence.
    """
    source = re.sub(r"^[ \t]*/\*.*?\*/[ \t]*\n", "", source, flags=re.M | re.S)
    source = re.sub(r"^[ \t]*//.*\n", "", source, flags=re.M)
    source = re.sub(r"(?<=[;{,)])[ \t]+//[ \t].*$", "", source, flags=re.M)
    source = re.sub(r"^[ \t]+", "", source, flags=re.M)
    return re.sub(r"\n{2,}", "\n", source)


def compact_css(source: str) -> str:
    """Drop comments, indentation and the spaces after property names."""
    source = re.sub(r"/\*.*?\*/", "", source, flags=re.S)
    source = re.sub(r"^[ \t]+", "", source, flags=re.M)
    source = re.sub(r"^([a-z-]+): ", r"\1:", source, flags=re.M)
    source = re.sub(r"([;{])\n", r"\1", source)
    source = re.sub(r"\s*\}\n", "}\n", source)
    return re.sub(r"\n{2,}", "\n", source)


def widget_folder() -> Path:
    """The folder holding consent.js and consent.css (top-level static/widget/)."""
    return Path(current_app.static_folder) / "widget"


@lru_cache(maxsize=8)
def _build(path: str, modified: float) -> Asset:
    source = Path(path).read_text(encoding="utf-8")
    compact = compact_js if path.endswith(".js") else compact_css
    body = compact(source).encode()
    digest = hashlib.sha384(body).digest()
    return Asset(
        body=body,
        gzipped=gzip.compress(body, compresslevel=9, mtime=0),
        version=hashlib.sha256(body).hexdigest()[:16],
        integrity="sha384-" + base64.b64encode(digest).decode(),
    )


def load_asset(name: str) -> Asset:
    """Return the served form of one widget file, rebuilt when the source changes."""
    path = widget_folder() / name
    return _build(str(path), path.stat().st_mtime)


def embed_snippet(base_url: str, site_key: str) -> Markup:
    """Return the one-tag embed for a site, with a versioned URL and its SRI hash."""
    asset = load_asset("consent.js")
    src = f"{base_url.rstrip('/')}/widget/consent.js?v={asset.version}"
    return Markup(
        f'<script src="{escape(src)}" data-site="{escape(site_key)}" '
        f'integrity="{asset.integrity}" crossorigin="anonymous" defer></script>'
    )


@bp.route("/widget/<any('consent.js', 'consent.css'):name>", methods=["GET", "HEAD"])
def asset(name: str):
    """Serve a widget file to any page: cached with an ETag, gzip, CORS and CORP open."""
    served = load_asset(name)
    is_gzip = "gzip" in request.accept_encodings
    headers = {
        "Cache-Control": (
            CACHE_VERSIONED if request.args.get("v") == served.version else CACHE_UNVERSIONED
        ),
        "Access-Control-Allow-Origin": "*",
        "Cross-Origin-Resource-Policy": "cross-origin",
        "X-Content-Type-Options": "nosniff",
        "Vary": "Accept-Encoding",
    }
    response = Response(
        served.gzipped if is_gzip else served.body,
        mimetype=ASSETS[name],
        headers=headers,
    )
    if is_gzip:
        response.headers["Content-Encoding"] = "gzip"
    # One weak tag for both encodings: they are the same file.
    response.set_etag(served.version, weak=True)
    return response.make_conditional(request)


@bp.get("/")
def demo():
    """Show the demo shop page with the banner embedded (``?lang=fr`` for French)."""
    language = request.args.get("lang") if request.args.get("lang") in ("en", "fr") else "en"
    return render_template("demo.html", site_key="demo", language=language)


@bp.get("/demo/embed")
@talisman(
    frame_options="SAMEORIGIN",
    content_security_policy={**CONTENT_SECURITY_POLICY, "frame-ancestors": "'self'"},
)
def demo_embed():
    """Stand in for a third-party marketing frame: it sets the ad network's cookie."""
    response = Response(render_template("demo_embed.html"))
    response.set_cookie("_ad_id", "demo-ad-visitor", max_age=90 * 86400, samesite="Lax")
    return response
