"""Self-hosted consent and cookie management service."""

from __future__ import annotations

import sys
from pathlib import Path

from flask import Flask

from consent.admin import bp as admin_bp
from consent.api import init_api
from consent.api.fastpath import install_fast_path
from consent.apidocs import bp as api_reference_bp
from consent.cli import register_cli
from consent.config import load_config
from consent.db import db, init_db, migrate
from consent.ledger import init_recording
from consent.limits import init_limits
from consent.logs import init_logging
from consent.ops import init_ops, track_requests
from consent.rights_pages import bp as rights_pages_bp
from consent.security import exempt_from_https_redirect, init_security, trust_proxies
from consent.unsubscribe import bp as unsubscribe_bp
from consent.widget import bp as widget_bp


def _top_level_folder(name: str) -> str:
    """``static/`` and ``templates/`` sit beside the package, or in share/ once installed."""
    beside_package = Path(__file__).resolve().parent.parent / name
    if beside_package.is_dir():
        return str(beside_package)
    return str(Path(sys.prefix) / "share" / "consent" / name)


def create_app(test_config: dict | None = None) -> Flask:
    """Build the application: configuration, extensions, blueprints."""
    app = Flask(
        __name__,
        instance_relative_config=True,
        static_folder=_top_level_folder("static"),
        template_folder=_top_level_folder("templates"),
    )
    load_config(app, test_config)
    init_logging(app)

    init_db(app)
    init_recording(app)
    migrate.init_app(app, db, directory=str(Path(__file__).parent / "migrations"))
    init_security(app)
    init_api(app)
    register_cli(app)

    # blueprints
    app.register_blueprint(widget_bp)
    app.register_blueprint(unsubscribe_bp)
    app.register_blueprint(rights_pages_bp)
    app.register_blueprint(admin_bp)
    app.register_blueprint(api_reference_bp)
    init_ops(app)

    limiter = init_limits(app)  # limits views by endpoint, so after the blueprints
    exempt_from_https_redirect(app)
    install_fast_path(app, limiter)
    track_requests(app)  # around the fast path too: every answer has an id and a count
    trust_proxies(app)  # outermost: every layer within sees the real client
    return app
