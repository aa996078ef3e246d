"""Links the service mints, built on ``PUBLIC_URL``, never on the request's Host header.

A caller who sets ``Host: evil.example`` must not get links to evil.example back (in
``List-Unsubscribe`` headers, embed snippets, anything mailed or shown to others).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import current_app


def public_url(endpoint: str, **values) -> str:
    """The absolute URL of ``endpoint`` under the configured ``PUBLIC_URL``."""
    base = urlsplit(current_app.config["PUBLIC_URL"])
    adapter = current_app.url_map.bind(
        base.netloc, script_name=base.path or "/", url_scheme=base.scheme
    )
    return adapter.build(endpoint, values, force_external=True)


def public_base_url() -> str:
    """``PUBLIC_URL`` with a trailing slash: where the service's own paths start."""
    return current_app.config["PUBLIC_URL"] + "/"
