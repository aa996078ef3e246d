"""Small helpers the tests share: speak to the API the way its clients do."""

from __future__ import annotations

import email
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from aiosmtpd.controller import Controller

#: The CSRF token's hidden input as WTForms renders it (attribute order varies).
CSRF_INPUT = re.compile(
    r'name="csrf_token" type="hidden" value="([^"]+)"|'
    r'type="hidden" name="csrf_token" value="([^"]+)"'
)


def csrf_token(client, page: str, **kwargs) -> str:
    """The CSRF token of the form on a page, as a browser would submit it."""
    response = client.get(page, **kwargs)
    assert response.status_code == 200, response.text
    match = CSRF_INPUT.search(response.text)
    assert match, f"no CSRF token on {page}"
    return match.group(1) or match.group(2)


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


PERSON_EMAIL = "ada@example.com"
PERSON_USER_ID = "ada-1"


def make_person(client, site_key, key, *, email_marketing: bool) -> str:
    """Ada on a site: a visitor linked to her user id and email, with choices recorded.

    Returns her visitor token; ``key`` needs the read, write and rights scopes.
    """
    token = submit(client, site_key, ACCEPT_ALL).get_json()["visitor_token"]
    for url, body in [
        ("/v1/server/links", {"visitor_token": token, "user_id": PERSON_USER_ID}),
        (
            "/v1/server/subjects/correct",
            {"user_id": PERSON_USER_ID, "field": "email", "value": PERSON_EMAIL},
        ),
        (
            "/v1/server/records",
            {
                "email": PERSON_EMAIL,
                "decisions": [{"purpose": "email_marketing", "granted": email_marketing}],
            },
        ),
    ]:
        assert client.post(url, json=body, headers=bearer(key)).status_code in (200, 201)
    return token


def hold_first_batch(monkeypatch, seconds: float = 0.5) -> list[int]:
    """Slow the first batch appended, so that concurrent submissions queue behind it
    and the next batch takes them all at once; return the sizes of the batches."""
    import threading
    import time

    from consent import ledger

    sizes: list[int] = []
    append = ledger.append_submissions
    first = threading.Event()

    def slowed(connection, batch, heads, **options):
        if not first.is_set():
            first.set()
            time.sleep(seconds)
        sizes.append(len(batch))
        return append(connection, batch, heads, **options)

    monkeypatch.setattr(ledger, "append_submissions", slowed)
    return sizes


def submit_at_once(app, site_key: str | None, bodies: list[dict]) -> list:
    """POST each body (``json=``, ``headers=``; ``site=`` instead of ``site_key``) from its
    own thread, all released together."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    start = threading.Barrier(len(bodies))

    def send(body):
        client = app.test_client()
        site = body.get("site", site_key)
        start.wait()
        options = {name: value for name, value in body.items() if name != "site"}
        return client.post(f"/v1/sites/{site}/records", **options)

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(send, bodies))


class Mailbox:
    """What a real SMTP server received: one ``email.message.Message`` per email."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"

    def bodies_to(self, address: str) -> list[str]:
        return [
            message.get_payload(decode=True).decode()
            for message in self.messages
            if message["To"] == address
        ]


@contextmanager
def smtp_server() -> Iterator[tuple[Mailbox, str]]:
    """A local SMTP server (aiosmtpd) on a free port: its mailbox and its SMTP_URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, f"smtp://127.0.0.1:{port}"
    finally:
        controller.stop()
