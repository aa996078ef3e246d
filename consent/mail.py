"""Send an email through the SMTP server named by ``SMTP_URL``.

``smtp://host:port`` (plain, for a local relay), ``smtp+starttls://user:password@host:587``
or ``smtps://user:password@host:465``. The password never appears in a log or an error.
"""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

from flask import current_app

SCHEMES = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}
TIMEOUT_SECONDS = 10


class MailUnavailable(Exception):
    """No SMTP server is configured, or it refused or could not be reached."""


def send_mail(to: str, subject: str, body: str) -> None:
    """Send one plain-text email; raise ``MailUnavailable`` if it cannot go."""
    url = current_app.config.get("SMTP_URL")
    if not url:
        raise MailUnavailable("No SMTP server is configured (CONSENT_SMTP_URL).")
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise MailUnavailable("CONSENT_SMTP_URL must look like smtp://host:port.")
    message = EmailMessage()
    message["From"] = current_app.config["MAIL_FROM"]
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    port = parts.port or SCHEMES[parts.scheme]
    connect = smtplib.SMTP_SSL if parts.scheme == "smtps" else smtplib.SMTP
    try:
        with connect(parts.hostname, port, timeout=TIMEOUT_SECONDS) as server:
            if parts.scheme == "smtp+starttls":
                server.starttls()
            if parts.username:
                server.login(unquote(parts.username), unquote(parts.password or ""))
            server.send_message(message)
    except (OSError, smtplib.SMTPException) as error:
        raise MailUnavailable(
            f"The SMTP server did not take the email ({type(error).__name__})."
        ) from None
