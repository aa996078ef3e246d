"""Serve the embeddable banner (static/widget/) and the demo shop page.

The files in ``static/widget/`` are the readable source. What pages download is one
script: consent.js with consent.css inside it, minified (tdewolff's minify: names shortened,
white space and comments out)
(the widget adopts it as a constructed stylesheet: no second request, and no CSP
``style-src`` exception on the host page). ``/widget/consent.js?site=KEY`` also carries
the site's banner configuration, so a first visit needs that one response only. No build
step; the size benchmark (``bench/widget_size.py``) measures exactly these bytes.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import brotli
import minify
from flask import Blueprint, Response, abort, current_app, render_template, request
from markupsafe import Markup, escape

from consent import regions
from consent.archive import archive_banner_version
from consent.i18n import BUILT_IN_LANGUAGES
from consent.security import CONTENT_SECURITY_POLICY, talisman
from consent.sites import (
    banner_config,
    config_in_languages,
    config_in_region,
    get_site_by_key,
    latest_policy,
)

bp = Blueprint("widget", __name__)

ASSETS = {"consent.js": "text/javascript", "consent.css": "text/css"}
#: Unversioned URLs are revalidated daily (ETag); ``?v=<version>`` URLs never change.
CACHE_UNVERSIONED = "public, max-age=86400, stale-while-revalidate=604800"
CACHE_VERSIONED = "public, max-age=31536000, immutable"
#: The constants of consent.js that the server fills in, and how they read unfilled.
SLOTS = {"CSS": r"const CSS\s*=\s*'';", "PRELOADED": r"const PRELOADED\s*=\s*null;"}


@dataclass(frozen=True)
class Asset:
    """One served widget file: its bytes, compressed both ways, a version and an SRI hash."""

    body: bytes
    gzipped: bytes
    brotli: bytes
    version: str
    integrity: str

    def encoded_for(self, accepted) -> tuple[bytes, str | None]:
        """The bytes to send for an Accept-Encoding, and their Content-Encoding."""
        if "br" in accepted:
            return self.brotli, "br"
        if "gzip" in accepted:
            return self.gzipped, "gzip"
        return self.body, None


def compact_js(source: str) -> str:
    """Minify JavaScript: local names shortened, comments and needless white space out."""
    return minify.string("application/javascript", source)


def compact_css(source: str) -> str:
    """Minify CSS."""
    return minify.string("text/css", source)


def widget_folder() -> Path:
    """The folder holding consent.js and consent.css (top-level static/widget/)."""
    return Path(current_app.static_folder) / "widget"


def fill_slot(script: str, name: str, value) -> str:
    """Put a JSON value into one of the readable script's server-filled constants."""
    pattern = re.compile(SLOTS[name])
    if not pattern.search(script):
        raise RuntimeError(f"consent.js lost its server-filled constant {name}")
    return pattern.sub(lambda _: f"const {name}={json.dumps(value)};", script, count=1)


def build_script(js_source: str, css_source: str, preloaded: dict | None = None) -> str:
    """Return the served consent.js: the stylesheet (and a site's configuration) inside,
    then minified (the slots are filled first: minifying renames the constants)."""
    script = fill_slot(js_source, "CSS", compact_css(css_source))
    if preloaded is not None:
        script = fill_slot(script, "PRELOADED", preloaded)
    return compact_js(script)


def _asset(body: bytes) -> Asset:
    return Asset(
        body=body,
        gzipped=gzip.compress(body, compresslevel=9, mtime=0),
        brotli=brotli.compress(body, quality=11),
        version=hashlib.sha256(body).hexdigest()[:16],
        integrity="sha384-" + base64.b64encode(hashlib.sha384(body).digest()).decode(),
    )


@lru_cache(maxsize=72)
def _build(
    folder: str, js_modified: float, css_modified: float, name: str, config_json: str | None
) -> Asset:
    css = (Path(folder) / "consent.css").read_text(encoding="utf-8")
    if name == "consent.css":
        return _asset(compact_css(css).encode())
    js = (Path(folder) / "consent.js").read_text(encoding="utf-8")
    preloaded = json.loads(config_json) if config_json else None
    return _asset(build_script(js, css, preloaded).encode())


def load_asset(name: str, config_json: str | None = None) -> Asset:
    """Return the served form of one widget file, rebuilt when the sources change."""
    folder = widget_folder()
    modified = [(folder / f).stat().st_mtime for f in ASSETS]
    return _build(str(folder), *modified, name, config_json)


def load_bundle(
    site_key: str, wanted_languages: list[str], region: str | None = None
) -> Asset | None:
    """Return consent.js with the site's banner configuration inside, or None if no site.

    It carries the texts of the language the browser prefers (and the site's default),
    and the visitor's region and its mode; on a page in another language the site
    offers, the widget asks for that one.
    """
    site = get_site_by_key(site_key)
    if site is None:
        return None
    config = banner_config(site, max_age=current_app.config["CONFIG_MAX_AGE"])
    archive_banner_version(site, config, load_asset("consent.js"))  # all languages
    config = config_in_region(site, config, region)
    config = config_in_languages(site, config, wanted_languages)
    return load_asset("consent.js", json.dumps(config, sort_keys=True))


def embed_snippet(base_url: str, site_key: str, *, bundle: bool = False) -> Markup:
    """Return the one-tag embed for a site.

    By default a versioned URL with its SRI hash. With ``bundle`` the URL also brings the
    site's configuration (one request before the banner shows), which changes with the
    configuration and so cannot carry an SRI hash.
    """
    url = f"{base_url.rstrip('/')}/widget/consent.js"
    if bundle:
        return Markup(
            f'<script src="{escape(url)}?site={escape(site_key)}" '
            f'data-site="{escape(site_key)}" defer></script>'
        )
    asset = load_asset("consent.js")
    return Markup(
        f'<script src="{escape(url)}?v={asset.version}" data-site="{escape(site_key)}" '
        f'integrity="{asset.integrity}" crossorigin="anonymous" defer></script>'
    )


@bp.route("/widget/<any('consent.js', 'consent.css'):name>", methods=["GET", "HEAD"])
def asset(name: str):
    """Serve a widget file to any page: cached with an ETag, gzip, CORS and CORP open."""
    served = load_asset(name)
    is_versioned = request.args.get("v") == served.version
    cache_control = CACHE_VERSIONED if is_versioned else CACHE_UNVERSIONED
    vary = "Accept-Encoding"
    bundle = None
    if "site" in request.args:
        bundle = load_bundle(
            request.args["site"],
            [tag for tag, _ in request.accept_languages],
            regions.request_region(request.headers.get, current_app.config),
        )
    if name == "consent.js" and bundle is not None:
        served = bundle
        # It carries the configuration: cached like the configuration endpoint.
        cache_control = f"public, max-age={current_app.config['CONFIG_MAX_AGE']}"
        vary = ", ".join(
            ["Accept-Encoding", "Accept-Language", *regions.region_headers(current_app.config)]
        )
    body, encoding = served.encoded_for(request.accept_encodings)
    headers = {
        "Cache-Control": cache_control,
        "Access-Control-Allow-Origin": "*",
        "Cross-Origin-Resource-Policy": "cross-origin",
        "X-Content-Type-Options": "nosniff",
        "Vary": vary,
    }
    response = Response(body, mimetype=ASSETS[name], headers=headers)
    if encoding:
        response.headers["Content-Encoding"] = encoding
    # One weak tag for every encoding: they are the same file.
    response.set_etag(served.version, weak=True)
    return response.make_conditional(request)


@bp.get("/")
def demo():
    """Show the demo shop with the banner (``?lang=fr``: in French; ``?bundle=1``: one request)."""
    language = request.args.get("lang", "en")
    language = language if language in BUILT_IN_LANGUAGES else "en"
    return render_template(
        "demo.html", site_key="demo", language=language, bundle=bool(request.args.get("bundle"))
    )


@bp.get("/privacy")
def demo_privacy():
    """Show the demo site's privacy policy, where its banner links."""
    site = get_site_by_key("demo")
    if site is None:
        abort(404)
    policy = latest_policy(site)
    return render_template(
        "demo_privacy.html",
        purposes=site.purposes,
        version=policy.version if policy else "draft",
        updated_at=policy.published_at.date() if policy else None,
    )


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
