"""The demo site: what `consent seed-demo` creates, and what the demo page shows."""

from __future__ import annotations

from consent.db import db
from consent.models import Site
from consent.sites import (
    STANDARD_PURPOSES,
    create_site,
    get_site_by_key,
    publish_policy,
    set_purpose,
)

DEMO_KEY = "demo"
DEMO_ORIGINS = ["http://127.0.0.1:5000", "http://localhost:5000"]
DEMO_POLICY_VERSION = "2026-11-01"

#: What the demo page sets, per standard purpose (titles come in every built-in language).
DEMO_EXTRAS = {
    "necessary": {
        # The demo page sets no necessary cookie (it has no sign-in); a scan would call a
        # declared one stale.
        "cookies": [],
        "services": [],
    },
    "preferences": {
        "cookies": [
            {
                "name": "demo_prefs",
                "is_prefix": False,
                "provider": "Demo shop",
                "duration": "1 year",
                "description": "Display preferences.",
            }
        ],
        "services": [],
    },
    "analytics": {
        "cookies": [],
        "services": [
            {
                "key": "matomo",
                "name": "Matomo",
                "provider": "Demo shop (self-hosted)",
                "policy_url": None,
                "cookies": [
                    {
                        "name": "_pk_",
                        "is_prefix": True,
                        "provider": "Matomo",
                        "duration": "13 months",
                        "description": "Visit statistics.",
                    }
                ],
            },
        ],
    },
    "marketing": {
        "cookies": [],
        "services": [
            {
                "key": "adnetwork",
                "name": "Ad Network",
                "provider": "Example Ads Ltd",
                "policy_url": None,
                "cookies": [
                    {
                        "name": "_ad_id",
                        "is_prefix": False,
                        "provider": "Example Ads",
                        "duration": "90 days",
                        "description": "Ad measurement.",
                    }
                ],
            },
        ],
    },
}

DEMO_PURPOSES = [
    {
        **standard,
        "cookies": DEMO_EXTRAS[standard["key"]]["cookies"],
        "services": DEMO_EXTRAS[standard["key"]]["services"],
    }
    for standard in STANDARD_PURPOSES
] + [
    {
        "key": "email_marketing",
        "kind": "communication",
        "is_required": False,
        "translations": {
            "en": {"title": "Marketing emails", "description": "News and offers by email."},
            "fr": {"title": "Emails marketing", "description": "Actualités et offres par email."},
        },
        "cookies": [],
        "services": [],
        "consent_mode": [],
    },
]


def seed_demo_site(origins: list[str] | None = None) -> Site:
    """Create or bring up to date the demo site; running it twice changes nothing."""
    site = get_site_by_key(DEMO_KEY)
    if site is None:
        site = create_site(
            DEMO_KEY,
            "Demo shop",
            origins=origins or DEMO_ORIGINS,
        )
    elif origins:
        site.allowed_origins = sorted(set(site.allowed_origins) | set(origins))
    for position, purpose in enumerate(DEMO_PURPOSES):
        set_purpose(
            site,
            purpose["key"],
            position=position,
            **{k: v for k, v in purpose.items() if k != "key"},
        )
    if not site.policy_versions:
        # The demo policy page is served by this app; policy URLs are absolute http(s).
        home = (origins or DEMO_ORIGINS)[0]
        publish_policy(site, DEMO_POLICY_VERSION, url=f"{home}/privacy", is_material=True)
    db.session.flush()
    return site
