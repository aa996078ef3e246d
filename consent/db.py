"""Database handle, base model and the one clock the service trusts."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import has_request_context, request
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import DateTime, MetaData, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

#: Named constraints so that Alembic migrations are the same on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=Base)
migrate = Migrate()


def now_utc() -> datetime:
    """Return the current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """A timestamp stored in UTC and always read back timezone-aware.

    SQLite has no timezone type and hands back naive values; this keeps every
    timestamp comparable and makes the hash of a record the same on every database.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use now_utc()")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


@event.listens_for(Engine, "connect")
def _configure_sqlite(dbapi_connection, connection_record):
    """Give SQLite foreign keys, WAL and a busy timeout; let SQLAlchemy emit BEGIN."""
    if type(dbapi_connection).__module__ != "sqlite3":
        return
    # Python's sqlite3 module would otherwise issue its own BEGIN lazily, which hides
    # the transaction start from us (see _begin_sqlite below).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@event.listens_for(Engine, "begin")
def _begin_sqlite(connection):
    """Take SQLite's write lock up front for any transaction that may write.

    A deferred transaction that reads the chain head and then writes can fail with
    SQLITE_BUSY when another writer got there first; ``BEGIN IMMEDIATE`` makes writers
    queue (up to the busy timeout) instead. Read-only requests (GET, HEAD, OPTIONS)
    keep a plain, concurrent ``BEGIN``.
    """
    if connection.dialect.name != "sqlite":
        return
    is_read_only = has_request_context() and request.method in ("GET", "HEAD", "OPTIONS")
    connection.exec_driver_sql("BEGIN" if is_read_only else "BEGIN IMMEDIATE")


def init_db(app) -> None:
    """Bind the database and make each request one transaction."""
    db.init_app(app)
    app.after_request(_commit_or_roll_back)


def _commit_or_roll_back(response):
    """Commit what a successful request wrote; a failed one leaves nothing behind."""
    if response.status_code < 400:
        db.session.commit()
    else:
        db.session.rollback()
    return response
