"""Small helpers the tests share: speak to the API the way its clients do."""

from __future__ import annotations


def submit(client, site_key, decisions, *, token=None, headers=None, **fields):
    """POST a submission the way the widget does; returns the response."""
    all_headers = dict(headers or {})
    if token:
        all_headers["X-Consent-Token"] = token
    body = {"decisions": decisions, **fields}
    return client.post(f"/v1/sites/{site_key}/records", json=body, headers=all_headers)


def check(client, site_key, purpose, *, token=None, service=None):
    """GET the check endpoint; returns the response."""
    query = {"purpose": purpose}
    if service:
        query["service"] = service
    headers = {"X-Consent-Token": token} if token else {}
    return client.get(f"/v1/sites/{site_key}/check", query_string=query, headers=headers)


ACCEPT_ALL = [
    {"purpose": "preferences", "granted": True},
    {"purpose": "analytics", "granted": True},
    {"purpose": "marketing", "granted": True},
]
REJECT_ALL = [{**decision, "granted": False} for decision in ACCEPT_ALL]


def bearer(secret: str) -> dict[str, str]:
    """The Authorization header for a server API key."""
    return {"Authorization": f"Bearer {secret}"}
