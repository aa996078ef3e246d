"""Admin accounts: creation, sign-in with a lockout, and the guard on every page.

Failed attempts are counted in the database (not in memory), so the lockout holds
across every app process behind the load balancer.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from flask import g, redirect, request, session, url_for
from sqlalchemy import delete, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from werkzeug.security import check_password_hash, generate_password_hash

from consent.admin.models import AdminUser, SignInFailure
from consent.db import db, now_utc
from consent.errors import InvalidRequest

#: After this many failures in a row (within FAILURE_WINDOW) the name is locked...
MAX_FAILURES = 5
#: ...for this long, and older failures are forgotten after the same time.
LOCKOUT = timedelta(minutes=15)
FAILURE_WINDOW = timedelta(minutes=15)
#: A signed-in session ends this long after sign-in, whatever the browser keeps.
SESSION_LIFETIME = timedelta(hours=12)
MIN_PASSWORD_LENGTH = 12


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
    admin.password_hash = generate_password_hash(password)
    db.session.flush()
    return admin


@functools.cache
def _dummy_hash() -> str:
    """A hash to check unknown names against, so they take as long as known ones."""
    return generate_password_hash("not a password anyone has")


def _lock_failures(name: str) -> SignInFailure:
    """The name's failure row, created if missing and locked until commit.

    Locking it makes concurrent attempts for one name (from any process) queue, so
    none slips past the count.
    """
    dialect = postgresql if db.session.get_bind().dialect.name == "postgresql" else sqlite
    db.session.execute(
        dialect.insert(SignInFailure).values(name=name, failures=0).on_conflict_do_nothing()
    )
    return db.session.execute(
        select(SignInFailure)
        .where(SignInFailure.name == name)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()


def authenticate(name: str, password: str) -> AdminUser | None:
    """Return the admin if the password is right; count a failure and maybe lock if not.

    Raises ``LockedOut`` while the name is locked, before the password is even looked at.
    """
    name = normalise_name(name)
    now = now_utc()
    failure = _lock_failures(name)
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
            SignInFailure.name != name,
            SignInFailure.last_failed_at < now - FAILURE_WINDOW,
            or_(SignInFailure.locked_until.is_(None), SignInFailure.locked_until <= now),
        )
    )
    db.session.flush()
    return None


def start_session(admin: AdminUser) -> None:
    """Sign the admin in: a fresh session (no fixation) that expires on its own."""
    session.clear()
    session["admin_id"] = admin.id
    session["signed_in_at"] = now_utc().timestamp()


def end_session() -> None:
    session.clear()


def signed_in_admin() -> AdminUser | None:
    """The admin of this session, if it is signed in and not past its lifetime."""
    admin_id = session.get("admin_id")
    signed_in_at = session.get("signed_in_at", 0)
    if admin_id is None or now_utc().timestamp() - signed_in_at > SESSION_LIFETIME.total_seconds():
        return None
    return db.session.get(AdminUser, admin_id)


def actor() -> str:
    """How the access log names the signed-in admin."""
    return f"admin:{g.admin.name}"


def safe_next(target: str | None) -> str:
    """Where to go after sign-in: only a path inside the admin, never another site."""
    default = url_for("admin.dashboard")
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/admin/"):
        return default
    return target


def require_admin() -> None:
    """Before every admin view but sign-in: load the admin or send to the sign-in page."""
    if request.endpoint in ("admin.sign_in", "admin.static"):
        return None
    g.admin = signed_in_admin()
    if g.admin is None:
        session.pop("admin_id", None)
        return redirect(url_for("admin.sign_in", next=request.full_path.rstrip("?")))
    return None
