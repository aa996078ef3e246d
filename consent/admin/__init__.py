"""The admin console: server-rendered pages for the people who run the service."""

from consent.admin import (
    evidence,  # noqa: F401 (its views register on the blueprint)
    scans,  # noqa: F401 (its views register on bp)
    webhooks,  # noqa: F401 (its pages register on the blueprint)
)
from consent.admin.views import bp

__all__ = ["bp"]
