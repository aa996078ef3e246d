"""The admin console's own tables: accounts, failed sign-ins and verification runs."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text
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


class SignInFailure(db.Model):
    """Recent failed sign-ins per name, shared by every app process through the database.

    Kept for names that match no account too, so a lockout does not reveal which
    names exist.
    """

    __tablename__ = "admin_sign_in_failures"

    #: The name tried, lower-case.
    name: Mapped[str] = mapped_column(String(80), primary_key=True)
    #: Failures since the last success or lockout, within the counting window.
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Until then every attempt for this name is refused, even with the right password.
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class VerificationRun(db.Model):
    """The outcome of one ``verify`` of a site's chain (CLI or admin console)."""

    __tablename__ = "verification_runs"
    __table_args__ = (Index("ix_verification_runs_site_ran_at", "site_id", "ran_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    ran_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    #: "cli" or "admin:<name>".
    ran_by: Mapped[str] = mapped_column(String(200))
    is_intact: Mapped[bool] = mapped_column(Boolean)
    records_checked: Mapped[int] = mapped_column(Integer)
    first_bad_sequence: Mapped[int | None] = mapped_column(Integer)
    problem: Mapped[str | None] = mapped_column(Text)

    site: Mapped[Site] = relationship()
