"""Admin accounts: creation, sign-in with a lockout, sessions, and the guard on every page.

Failed attempts are counted in the database (not in memory), per name and client
address, so the lockout holds across every app process behind the load balancer and a
stranger cannot lock a real admin out. Sessions are rows too: the signed cookie only
carries a random token, so deleting the row ends every copy of the cookie.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from flask import current_app, g, redirect, request, session, url_for
from sqlalchemy import delete, or_, select
from werkzeug.security import check_password_hash, generate_password_hash

from consent.admin.models import AdminSession, AdminUser, SignInFailure
from consent.db import db, insert_for_dialect, now_utc
from consent.errors import InvalidRequest

#: After this many failures in a row (within FAILURE_WINDOW) the name is locked...
MAX_FAILURES = 5
#: ...for this long, and older failures are forgotten after the same time.
LOCKOUT = timedelta(minutes=15)
FAILURE_WINDOW = timedelta(minutes=15)
MIN_PASSWORD_LENGTH = 12
#: Write a session's last-seen time at most this often, not on every request.
TOUCH_INTERVAL = timedelta(seconds=60)


class LockedOut(Exception):
    """Too many failed sign-ins for this name; try again after ``until``."""

    def __init__(self, until: datetime):
        super().__init__(f"locked until {until.isoformat()}")
        self.until = until


def normalise_name(name: str) -> str:
    return name.strip().lower()


def find_admin(name: str) -> AdminUser | None:
    return db.session.scalars(
        select(AdminUser).where(AdminUser.name == normalise_name(name))
    ).first()


def set_admin_password(name: str, password: str, *, replace: bool = False) -> AdminUser:
    """Create an admin, or with ``replace`` set a new password for an existing one."""
    name = normalise_name(name)
    if not 1 <= len(name) <= 80:
        raise InvalidRequest("name", "Use 1 to 80 characters.")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidRequest("password", f"Use at least {MIN_PASSWORD_LENGTH} characters.")
    admin = find_admin(name)
    if admin is not None and not replace:
        raise InvalidRequest("name", f"An admin named {name!r} exists already.")
    if admin is None:
        admin = AdminUser(name=name)
        db.session.add(admin)
    else:
        end_all_sessions(admin)  # a new password ends every session the old one opened
    admin.password_hash = generate_password_hash(password)
    db.session.flush()
    return admin


@functools.cache
def _dummy_hash() -> str:
    """A hash to check unknown names against, so they take as long as known ones."""
    return generate_password_hash("not a password anyone has")


def _lock_failures(name: str, address: str) -> SignInFailure:
    """The (name, address) failure row, created if missing and locked until commit.

    Locking it makes concurrent attempts for one name from one address (through any
    process) queue, so none slips past the count.
    """
    db.session.execute(
        insert_for_dialect(SignInFailure)
        .values(name=name, address=address, failures=0)
        .on_conflict_do_nothing()
    )
    return db.session.execute(
        select(SignInFailure)
        .where(SignInFailure.name == name, SignInFailure.address == address)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()


def authenticate(name: str, password: str, address: str) -> AdminUser | None:
    """Return the admin if the password is right; count a failure and maybe lock if not.

    Failures count per (name, client address): five wrong passwords lock that name for
    that address only. Raises ``LockedOut`` while it is locked, before the password is
    even looked at.
    """
    name = normalise_name(name)
    address = address[:64]
    now = now_utc()
    failure = _lock_failures(name, address)
    if failure.locked_until is not None and failure.locked_until > now:
        raise LockedOut(failure.locked_until)
    admin = find_admin(name)
    is_right = check_password_hash(admin.password_hash if admin else _dummy_hash(), password)
    if admin is not None and is_right:
        db.session.delete(failure)
        admin.last_signed_in_at = now
        db.session.flush()
        return admin
    is_recent = failure.last_failed_at is not None and now - failure.last_failed_at < FAILURE_WINDOW
    failure.failures = (failure.failures if is_recent else 0) + 1
    failure.last_failed_at = now
    failure.locked_until = None
    if failure.failures >= MAX_FAILURES:
        failure.failures = 0
        failure.locked_until = now + LOCKOUT
    # Forget other names' failures that no longer count and locks that have ended, so
    # guessing many names does not grow the table without bound.
    db.session.execute(
        delete(SignInFailure).where(
            or_(SignInFailure.name != name, SignInFailure.address != address),
            SignInFailure.last_failed_at < now - FAILURE_WINDOW,
            or_(SignInFailure.locked_until.is_(None), SignInFailure.locked_until <= now),
        )
    )
    db.session.flush()
    return None


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(admin: AdminUser) -> AdminSession:
    """Sign the admin in: a new session row and a fresh cookie (no fixation)."""
    token = secrets.token_urlsafe(32)
    record = AdminSession(
        admin_id=admin.id,
        token_hash=_token_hash(token),
        user_agent=(request.user_agent.string or "")[:200],
        address=(request.remote_addr or "")[:64],
    )
    db.session.add(record)
    db.session.flush()
    session.clear()
    session["session_token"] = token
    return record


def current_session() -> AdminSession | None:
    """This browser's session row, if its cookie names one that is still open."""
    token = session.get("session_token")
    if not isinstance(token, str):
        return None
    return db.session.scalars(
        select(AdminSession).where(AdminSession.token_hash == _token_hash(token))
    ).first()


def end_session() -> None:
    """Sign this browser out: its row goes, so a copy of the cookie no longer works."""
    record = current_session()
    if record is not None:
        db.session.delete(record)
        db.session.flush()
    session.clear()


def end_all_sessions(admin: AdminUser, *, keep: AdminSession | None = None) -> int:
    """End every session of the admin (but ``keep``); return how many ended."""
    query = delete(AdminSession).where(AdminSession.admin_id == admin.id)
    if keep is not None:
        query = query.where(AdminSession.id != keep.id)
    ended = db.session.execute(query).rowcount
    db.session.flush()
    return ended


def end_session_of(admin: AdminUser, session_id: int) -> bool:
    """End one session of the admin; say whether there was one."""
    ended = db.session.execute(
        delete(AdminSession).where(AdminSession.admin_id == admin.id, AdminSession.id == session_id)
    ).rowcount
    db.session.flush()
    return ended > 0


def check_password(admin: AdminUser, password: str) -> bool:
    return check_password_hash(admin.password_hash, password)


def active_sessions(admin: AdminUser) -> list[AdminSession]:
    """The admin's sessions still open, most recently used first."""
    return list(
        db.session.scalars(
            select(AdminSession)
            .where(AdminSession.admin_id == admin.id)
            .order_by(AdminSession.last_seen_at.desc(), AdminSession.id.desc())
        )
    )


def is_expired(record: AdminSession, now: datetime) -> bool:
    """Whether a session is past its idle or its absolute timeout."""
    config = current_app.config
    return now - record.last_seen_at > timedelta(
        minutes=config["ADMIN_IDLE_MINUTES"]
    ) or now - record.created_at > timedelta(hours=config["ADMIN_SESSION_HOURS"])


def signed_in_admin() -> AdminUser | None:
    """The admin of this session, if its row exists and it is not past a timeout."""
    record = current_session()
    if record is None:
        return None
    now = now_utc()
    if is_expired(record, now):
        db.session.delete(record)  # committed with the redirect to the sign-in page
        db.session.flush()
        return None
    if now - record.last_seen_at > TOUCH_INTERVAL:
        record.last_seen_at = now
        db.session.flush()
    g.admin_session = record
    return record.admin


def actor() -> str:
    """How the access log names the signed-in admin."""
    return f"admin:{g.admin.name}"


def safe_next(target: str | None) -> str:
    """Where to go after sign-in: only a plain path inside the admin, never another site.

    Anything odd (control characters such as CR/LF, backslashes, another scheme or
    host, a path outside /admin/) falls back to the dashboard.
    """
    default = url_for("admin.dashboard")
    if not target or len(target) > 2000:
        return default
    if any(ord(character) < 33 or ord(character) == 127 for character in target):
        return default
    if "\\" in target or target.startswith("//"):
        return default
    try:
        parts = urlsplit(target)
    except ValueError:
        return default
    if parts.scheme or parts.netloc or not parts.path.startswith("/admin/"):
        return default
    return target


def require_admin() -> None:
    """Before every admin view but sign-in: load the admin or send to the sign-in page."""
    if request.endpoint in ("admin.sign_in", "admin.static"):
        return None
    g.admin = signed_in_admin()
    if g.admin is None:
        session.pop("session_token", None)
        return redirect(url_for("admin.sign_in", next=request.full_path.rstrip("?")))
    return None
