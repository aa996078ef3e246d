"""The admin console's own tables: accounts, roles, sessions, failed sign-ins, verifications."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from consent.db import UTCDateTime, db, now_utc
from consent.models import Site


class AdminUser(db.Model):
    """Someone who runs the service; created with ``consent create-admin``."""

    __tablename__ = "admin_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: Sign-in name, stored lower-case.
    name: Mapped[str] = mapped_column(String(80), unique=True)
    #: Werkzeug's scrypt hash ("scrypt:32768:8:1$salt$hash"), never the password.
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    last_signed_in_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    roles: Mapped[list[AdminRole]] = relationship(
        back_populates="admin", cascade="all, delete-orphan", order_by="AdminRole.id"
    )


class AdminRole(db.Model):
    """One role an admin holds, on one site or (``site_id`` NULL) on every site."""

    __tablename__ = "admin_roles"
    __table_args__ = (UniqueConstraint("admin_id", "site_id", "role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    admin_id: Mapped[int] = mapped_column(ForeignKey("admin_users.id", ondelete="CASCADE"))
    #: NULL: the role holds on every site, those made later included.
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    #: One of consent.admin.roles.ROLES.
    role: Mapped[str] = mapped_column(String(20))

    admin: Mapped[AdminUser] = relationship(back_populates="roles")
    site: Mapped[Site | None] = relationship()


class AdminSession(db.Model):
    """A signed-in browser; deleting the row ends the session, whatever the cookie says."""

    __tablename__ = "admin_sessions"
    __table_args__ = (Index("ix_admin_sessions_admin_id", "admin_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    admin_id: Mapped[int] = mapped_column(ForeignKey("admin_users.id", ondelete="CASCADE"))
    #: SHA-256 of the random token the session cookie carries; the token is never stored.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    #: The last request seen: the idle timeout counts from here.
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    #: The browser's User-Agent, shortened, so the admin can tell sessions apart.
    user_agent: Mapped[str] = mapped_column(String(200), default="")
    address: Mapped[str] = mapped_column(String(64), default="")

    admin: Mapped[AdminUser] = relationship()


class SignInFailure(db.Model):
    """Recent failed sign-ins per name and client address, shared by every app process.

    Counted per (name, address), so a stranger guessing a real admin's name locks only
    themselves out. Kept for names that match no account too, so a lockout does not
    reveal which names exist.
    """

    __tablename__ = "admin_sign_in_failures"

    #: The name tried, lower-case.
    name: Mapped[str] = mapped_column(String(80), primary_key=True)
    #: The client address the attempts came from.
    address: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: Failures since the last success or lockout, within the counting window.
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Until then every attempt for this name is refused, even with the right password.
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
