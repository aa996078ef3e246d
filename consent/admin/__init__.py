"""The admin console: server-rendered pages for the people who run the service."""

from consent.admin import webhooks  # noqa: F401 - registers its pages on the blueprint
from consent.admin.views import bp

__all__ = ["bp"]
