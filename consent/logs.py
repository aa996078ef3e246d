"""Logs: JSON lines in production, plain text in development; secrets never written.

Every line carries the request id (``X-Request-Id``, see ``consent.ops``). Unsubscribe
tokens, visitor tokens, API keys, bearer credentials and email addresses are replaced
before any handler writes the line: in the app's own logs, in the development server's
request lines and in gunicorn's access log (``gunicorn_logging`` below, used by the
shipped ``gunicorn.conf.py``).
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import traceback
from collections.abc import Mapping

from flask import Flask
from pythonjsonlogger.json import JsonFormatter

#: The id of the request being answered in this thread, for every line it logs.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "consent_request_id", default=None
)

REDACTED = "[redacted]"
#: (pattern, replacement) applied in order to every message and traceback.
REDACTIONS = [
    # The unsubscribe token in a path is a credential: it opts a person out.
    (re.compile(r"(/unsubscribe/)[^\s/?#\"']+"), rf"\1{REDACTED}"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[^\s\"',]+"), rf"\1 {REDACTED}"),
    # Server API keys: ck_<prefix>.<secret>; the prefix alone names the key.
    (re.compile(r"\b(ck_[0-9a-f]{12})\.[A-Za-z0-9_-]+"), rf"\1.{REDACTED}"),
    # Query parameters that carry a person or a credential.
    (
        re.compile(r"(?i)\b(email|user_id|visitor_id|visitor_token|token|key|secret)=[^&\s\"']+"),
        rf"\1={REDACTED}",
    ),
    # Signed tokens (itsdangerous: payload.timestamp.signature, or payload.signature).
    (re.compile(r"\b[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]{16,})+"), REDACTED),
    (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"), "[email]"),
    (re.compile(r"[A-Za-z0-9._%+-]+%40[A-Za-z0-9.-]+\.[A-Za-z]{2,}"), "[email]"),
]


def redact(text: str) -> str:
    """Replace tokens, keys and email addresses in ``text``."""
    for pattern, replacement in REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Redact each line before it is written, and stamp it with the request id."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id is None and isinstance(record.args, Mapping):
            # gunicorn's access log runs once the request is over: read the answer's header.
            request_id = record.args.get("{x-request-id}o") or None
        record.request_id = request_id
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)))
            record.exc_info = None
        return True


class JsonLines(JsonFormatter):
    """One JSON object a line: time, level, logger, message, request id."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger"})
        kwargs.setdefault("timestamp", "time")
        super().__init__("%(levelname)s %(name)s %(message)s %(request_id)s", *args, **kwargs)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def log_format(config) -> str:
    """ "json" or "text": ``LOG_FORMAT`` if set, else JSON in production only."""
    chosen = config.get("LOG_FORMAT") or ("json" if config.get("ENV") == "production" else "text")
    return "json" if chosen == "json" else "text"


def _handler(stream, chosen: str) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonLines() if chosen == "json" else logging.Formatter(TEXT_FORMAT))
    return handler


def init_logging(app: Flask) -> None:
    """Send the app's (and the development server's) logs through the redacting handler.

    Under the shipped gunicorn configuration the root logger already has one; a
    process gets one handler however many apps it builds (tests build many).
    """
    root = logging.getLogger()
    if any(_is_ours(handler) for handler in root.handlers):
        return
    root.addHandler(_handler(sys.stderr, log_format(app.config)))
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)


def _is_ours(handler: logging.Handler) -> bool:
    return any(isinstance(item, RedactingFilter) for item in handler.filters)


def gunicorn_logging(chosen: str, access_log: str | None, level: str) -> dict:
    """gunicorn's ``logconfig_dict``: its error and access logs, redacted, as ``chosen``."""
    formatter = {"()": "consent.logs.JsonLines"} if chosen == "json" else {"format": TEXT_FORMAT}
    handlers = {
        "error": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
            "formatter": "consent",
            "filters": ["redact"],
        }
    }
    loggers = {
        "gunicorn.error": {"level": level.upper(), "handlers": ["error"], "propagate": False}
    }
    if access_log:
        handlers["access"] = (
            {"class": "logging.StreamHandler", "stream": "ext://sys.stdout"}
            if access_log == "-"
            else {"class": "logging.FileHandler", "filename": access_log}
        ) | {"formatter": "consent", "filters": ["redact"]}
        loggers["gunicorn.access"] = {
            "level": "INFO",
            "handlers": ["access"],
            "propagate": False,
        }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": "consent.logs.RedactingFilter"}},
        "formatters": {"consent": formatter},
        "handlers": handlers,
        "loggers": loggers,
        "root": {"level": "INFO", "handlers": ["error"]},
    }
