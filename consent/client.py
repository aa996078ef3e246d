"""A typed Python client for the server API: ``ConsentClient(base_url, api_key)``.

Every call answers a plain dataclass or dict, or raises a ``ConsentError`` subclass
built from the service's one JSON error shape (``error``, ``message``, ``errors`` per
field). Writes carry an ``Idempotency-Key`` (made here unless given) and are retried
on 409 and 503 (and a proxy's 502 and 504) with the same key: a retry never records twice.

    client = ConsentClient("https://consent.example.com", "ck_....secret")
    if client.check("email_marketing", email="ada@example.com").allowed:
        ...
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import httpx

Identity = dict[str, str]


class ConsentError(Exception):
    """The service refused a call; ``errors`` names the fields at fault."""

    def __init__(self, status: int, error: str, message: str, errors: dict | None = None):
        super().__init__(f"{status} {error}: {message}")
        self.status = status
        self.error = error
        self.message = message
        self.errors: dict[str, list[str]] = errors or {}


class InvalidRequest(ConsentError):
    """400, 413, 415 or 422: fix the request (see ``errors``)."""


class Unauthorized(ConsentError):
    """401: the API key is missing, wrong or revoked."""


class Forbidden(ConsentError):
    """403: the key lacks the scope, or the person belongs to another site."""


class NotFound(ConsentError):
    """404: no such person (or route)."""


class Conflict(ConsentError):
    """409: a concurrent request changed the same data; retried automatically."""


class RateLimited(ConsentError):
    """429: too many requests; ``retry_after`` seconds to wait."""

    retry_after: float = 0.0


class Unavailable(ConsentError):
    """503 or 507: the database cannot take it now; retried automatically (503)."""


_ERRORS_BY_STATUS: dict[int, type[ConsentError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    415: InvalidRequest,
    422: InvalidRequest,
    429: RateLimited,
    503: Unavailable,
    507: Unavailable,
}
#: 409 and 503 from the service; 502 and 504 from a proxy that lost the answer.
RETRIED_STATUSES = (409, 502, 503, 504)


@dataclass(frozen=True)
class CheckResult:
    """The answer to "may I?" for one person and purpose."""

    allowed: bool
    purpose: str
    reason: str
    service: str | None = None
    decided_at: datetime | None = None
    expires_at: datetime | None = None


def _moment(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _identity(user_id: str | None, email: str | None, visitor_token: str | None) -> Identity:
    given = {
        name: value
        for name, value in (
            ("user_id", user_id),
            ("email", email),
            ("visitor_token", visitor_token),
        )
        if value is not None
    }
    if len(given) != 1:
        raise ValueError("Give exactly one of user_id, email, visitor_token.")
    return given


class ConsentClient:
    """The service's server API for one site's key."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retries = retries
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "consent-client/1"},
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ConsentClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- reads -----------------------------------------------------------------------

    def check(
        self,
        purpose: str,
        *,
        user_id: str | None = None,
        email: str | None = None,
        visitor_token: str | None = None,
        service: str | None = None,
    ) -> CheckResult:
        """May this purpose (or service) be used for this person?"""
        params = {"purpose": purpose, **_identity(user_id, email, visitor_token)}
        if service is not None:
            params["service"] = service
        body = self._call("GET", "/v1/server/check", params=params)
        return CheckResult(
            allowed=body["allowed"],
            purpose=body["purpose"],
            reason=body["reason"],
            service=body.get("service"),
            decided_at=_moment(body.get("decided_at")),
            expires_at=_moment(body.get("expires_at")),
        )

    def bulk_check(
        self, purpose: str, *, emails: list[str] | None = None, user_ids: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """Which of up to 10,000 emails (or user ids) may be contacted for ``purpose``."""
        if (emails is None) == (user_ids is None):
            raise ValueError("Give either emails or user_ids.")
        body: dict[str, Any] = {"purpose": purpose}
        body["emails" if emails is not None else "user_ids"] = emails or user_ids
        return self._call("POST", "/v1/server/bulk-check", json=body)["results"]

    def export(
        self,
        *,
        user_id: str | None = None,
        email: str | None = None,
        visitor_token: str | None = None,
        format: Literal["json", "csv", "receipts"] = "json",
    ) -> Any:
        """Everything held about a person (a ``rights`` key); CSV comes back as text."""
        params = {"format": format, **_identity(user_id, email, visitor_token)}
        return self._call("GET", "/v1/server/subjects/export", params=params)

    # --- writes (idempotent, retried) ------------------------------------------------

    def record(
        self,
        decisions: list[dict[str, Any]],
        *,
        user_id: str | None = None,
        email: str | None = None,
        visitor_token: str | None = None,
        source: Literal["api", "import"] = "api",
        policy_version: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Record decisions for a person; a retry with the same key records nothing new.

        A ``user_id`` with an ``email`` records for the user and attaches the email.
        """
        if user_id is not None and email is not None and visitor_token is None:
            identity = {"user_id": user_id, "email": email}  # the email is attached to the user
        else:
            identity = _identity(user_id, email, visitor_token)
        body: dict[str, Any] = {"decisions": decisions, "source": source, **identity}
        if policy_version is not None:
            body["policy_version"] = policy_version
        return self._call("POST", "/v1/server/records", json=body, idempotency_key=idempotency_key)

    def link(self, visitor_token: str, user_id: str) -> dict[str, Any]:
        """Link a browser visitor to the site's user id: consent follows them."""
        body = {"visitor_token": visitor_token, "user_id": user_id}
        return self._call("POST", "/v1/server/links", json=body)

    def unsubscribe_links(self, purpose: str, emails: list[str]) -> list[dict[str, Any]]:
        """Signed one-click unsubscribe links, with their List-Unsubscribe headers."""
        body = {"purpose": purpose, "emails": emails}
        return self._call("POST", "/v1/server/unsubscribe-links", json=body)["links"]

    def erase(
        self,
        *,
        user_id: str | None = None,
        email: str | None = None,
        visitor_token: str | None = None,
    ) -> dict[str, Any]:
        """Erase a person (a ``rights`` key): identifiers gone, history kept."""
        body = _identity(user_id, email, visitor_token)
        return self._call("POST", "/v1/server/subjects/erase", json=body)

    def rights_request(
        self,
        kind: Literal["access", "export", "correction", "erasure", "objection"],
        *,
        user_id: str | None = None,
        email: str | None = None,
        visitor_token: str | None = None,
        message: str | None = None,
    ) -> dict[str, Any]:
        """Register a logged-in person's rights request (a ``rights`` key): the site's
        backend vouches for who they are, so it starts verified; returns its receipt
        (reference, state, due date)."""
        body: dict[str, Any] = {"kind": kind, **_identity(user_id, email, visitor_token)}
        if message is not None:
            body["message"] = message
        return self._call("POST", "/v1/server/rights-requests", json=body)

    # --- transport -------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict | None = None,
        json: dict | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        headers = {}
        if method == "POST":
            headers["Idempotency-Key"] = idempotency_key or str(uuid.uuid4())
        for attempt in range(self.retries + 1):
            response = self._http.request(method, path, params=params, json=json, headers=headers)
            if response.status_code not in RETRIED_STATUSES or attempt == self.retries:
                break
            time.sleep(min(float(response.headers.get("Retry-After", 1)), 5.0) * (attempt + 1))
        if response.status_code >= 400:
            raise _error_from(response)
        if response.headers.get("Content-Type", "").startswith("application/json"):
            return response.json()
        return response.text


def _error_from(response: httpx.Response) -> ConsentError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    kind = _ERRORS_BY_STATUS.get(response.status_code, ConsentError)
    error = kind(
        response.status_code,
        body.get("error", "error"),
        body.get("message", response.reason_phrase),
        body.get("errors"),
    )
    if isinstance(error, RateLimited):
        error.retry_after = float(response.headers.get("Retry-After", 0))
    return error
