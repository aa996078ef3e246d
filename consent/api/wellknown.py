"""Well-known resources: the Global Privacy Control support statement."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("wellknown", __name__)

#: Last time this service's GPC handling changed.
GPC_LAST_UPDATE = "2026-12-02"


@bp.get("/.well-known/gpc.json")
def gpc_support():
    """Declare that this service honours Global Privacy Control signals."""
    return (
        {"gpc": True, "lastUpdate": GPC_LAST_UPDATE},
        200,
        {
            "Cache-Control": "public, max-age=86400",
            "Access-Control-Allow-Origin": "*",
        },
    )
