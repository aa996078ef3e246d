"""Database handle, base model and the one clock the service trusts."""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TypeVar

from flask import after_this_request, current_app, g, has_request_context, request
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import DateTime, MetaData, create_engine, event, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

T = TypeVar("T")
log = logging.getLogger(__name__)

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


#: How long a statement waits for another connection's write lock before it fails.
SQLITE_BUSY_MILLISECONDS = 10_000
#: Per connection: the memory map is shared page cache, the cache size private memory.
SQLITE_MMAP_BYTES = 256 * 1024 * 1024
SQLITE_CACHE_KIB = 16 * 1024


def _configure_sqlite(dbapi_connection, connection_record):
    """Give SQLite foreign keys, WAL and a busy timeout; let SQLAlchemy emit BEGIN."""
    # Python's sqlite3 module would otherwise issue its own BEGIN lazily, which hides
    # the transaction start from us (see _begin_sqlite below).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MILLISECONDS}")
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit the client was told about survives a power cut (NORMAL may lose it).
    cursor.execute("PRAGMA synchronous=FULL")
    # Read index pages through a memory map and keep more of them per connection: with
    # millions of subjects the check's lookups otherwise go to the OS on every request.
    cursor.execute(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cursor.close()


#: Execution option marking an ``autocommit_engine``'s connections.
AUTOCOMMIT_READS = "consent_autocommit_reads"


def autocommit_engine(url) -> Engine:
    """A pool for single-statement reads: autocommit, so no BEGIN, ROLLBACK or ping.

    A dropped connection fails its statement and invalidates the pool; the caller
    retries elsewhere (the check's fast path leaves the request to Flask).
    """
    return configure_engine(
        create_engine(url, isolation_level="AUTOCOMMIT", execution_options={AUTOCOMMIT_READS: True})
    )


def _begin_sqlite(connection):
    """Take SQLite's write lock up front for any transaction that may write.

    A deferred transaction that reads the chain head and then writes can fail with
    SQLITE_BUSY when another writer got there first; ``BEGIN IMMEDIATE`` makes writers
    queue (up to the busy timeout) instead. Read-only requests (GET, HEAD, OPTIONS)
    keep a plain, concurrent ``BEGIN``.
    """
    options = connection.get_execution_options()
    if options.get("isolation_level") == "AUTOCOMMIT" or options.get(AUTOCOMMIT_READS):
        return  # one statement (the check), in SQLite's own implicit read transaction
    is_read_only = not options.get(WRITES) and (
        has_request_context()
        and (request.method in ("GET", "HEAD", "OPTIONS") or session_reads_only())
    )
    connection.exec_driver_sql("BEGIN" if is_read_only else "BEGIN IMMEDIATE")


#: Execution option: this connection's transactions write (SQLite: ``BEGIN IMMEDIATE``).
WRITES = "consent_writes"
#: ``g`` flag: the request's session only reads; its writes have a connection of their own.
SESSION_READS_ONLY = "consent_session_reads_only"


def mark_session_reads_only() -> None:
    """Declare that this request's session will only read (before its first statement).

    On SQLite its transaction then begins without the write lock, so that it does not
    queue behind, or hold up, the transactions that write (``writing_connection``).
    """
    setattr(g, SESSION_READS_ONLY, True)


def session_reads_only() -> bool:
    """Whether this request declared that its session only reads."""
    return has_request_context() and g.get(SESSION_READS_ONLY, False)


@contextmanager
def writing_connection() -> Iterator[Connection]:
    """A connection of its own, in one write transaction committed on leaving.

    On SQLite, its writers take turns first (``writers_turn``), then the write lock.
    """
    with writers_turn(db.engine), db.engine.connect() as connection:
        connection.execution_options(**{WRITES: True})
        with connection.begin():
            yield connection


@contextmanager
def writers_turn(engine: Engine) -> Iterator[None]:
    """Wait for the other ``writing_connection``s to a SQLite file to end, in any process.

    SQLite's own busy handler sleeps and retries, ever longer (1 ms, then up to 100),
    so a writer that keeps missing the lock waits whole seconds while others keep
    getting it: measured, group commit's batches waited up to 1.9 s at the 99th
    percentile. Here they take turns on a lock file beside the database
    (``<database>-writers``), tried every half millisecond (``fcntl`` has no timed wait)
    for up to ``TURN_SECONDS``; a writer that did not get its turn by then, or cannot
    open the file (a read-only folder), goes on without it: SQLite's lock still keeps
    writers apart, and its busy timeout still answers for a database held too long. A
    turn ends when its holder's transaction does or its process dies. Never the database
    file itself: closing any descriptor of it would drop SQLite's own locks.
    """
    path = engine.url.database if engine.dialect.name == "sqlite" else None
    if not path or path == ":memory:" or path.startswith("file:"):
        yield
        return
    if getattr(_turns, "is_held", False):  # it would wait for itself
        raise RuntimeError("a writing_connection inside another, in one thread")
    try:  # read-only is enough to lock; the database's own permissions, if it has any
        mode = os.stat(path).st_mode & 0o666 if os.path.exists(path) else 0o644
        descriptor = os.open(f"{path}-writers", os.O_RDONLY | os.O_CREAT, mode)
    except OSError as error:
        _warn_once(f"SQLite writers go without turns: {error}")
        yield
        return
    try:
        deadline = time.monotonic() + TURN_SECONDS
        while True:
            try:  # one lock per descriptor: threads of one process take turns too
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    log.warning("a SQLite writer went on without its turn after %ss", TURN_SECONDS)
                    break
                time.sleep(0.0005)
        _turns.is_held = True
        yield
    finally:
        _turns.is_held = False
        os.close(descriptor)  # ends the turn


@functools.cache
def _warn_once(message: str) -> None:
    log.warning(message)


#: How long a writer waits for its turn (``writers_turn``): half SQLite's busy timeout.
TURN_SECONDS = SQLITE_BUSY_MILLISECONDS / 2000
_turns = threading.local()


def once_more_if_disconnected(read: Callable[[], T]) -> T:
    """Run a read, and once more if its pooled connection turned out to be dead.

    The service sends no ping before each request: a connection dropped while idle (a
    database restart, a failover) fails its first statement instead, which invalidates
    the pool, so the second attempt connects afresh. Only for statements safe to
    repeat: a write answers 503, and the client's ``Idempotency-Key`` makes its retry safe.
    """
    try:
        return read()
    except DBAPIError as error:
        if not error.connection_invalidated:
            raise
    return read()


def _error_code(dbapi_error: BaseException | None) -> str:
    """The driver's error name: a PostgreSQL SQLSTATE or SQLite's SQLITE_* name."""
    return (
        getattr(dbapi_error, "sqlstate", None)
        or getattr(dbapi_error, "sqlite_errorname", None)
        or ""
    )


def _is_read_only(code: str) -> bool:
    return code.startswith("SQLITE_READONLY") or code == "25006"


def _reconnect_after_read_only(context):
    """A connection that found the database read-only stays so: the pool opens new ones.

    SQLite decides read-only or not when it opens the file, PostgreSQL when the session
    starts (a standby, ``default_transaction_read_only``); without this, writes would
    keep failing after the database is writable again, until a restart.
    """
    if _is_read_only(_error_code(context.original_exception)):
        context.is_disconnect = True


#: What to do when the database answers but lacks the service's tables or columns.
SCHEMA_MISSING = "The database has no schema, or an older one: run `consent init-db` to migrate it."


def _is_missing_schema(code: str, error: DBAPIError) -> bool:
    """A table or column is missing: the database was never (fully) migrated."""
    if code in ("42P01", "42703"):  # undefined_table, undefined_column
        return True
    message = str(error.orig)
    return code == "SQLITE_ERROR" and message.startswith(("no such table", "no such column"))


def describe_database_error(error: DBAPIError) -> tuple[int, str]:
    """Name what went wrong with the database: an HTTP status and a readable message."""
    code = _error_code(error.orig)
    if code in ("SQLITE_FULL", "53100"):
        return 507, "The database is full (no space left): nothing was written."
    if _is_read_only(code):
        return 503, "The database is read-only: nothing was written."
    if code.startswith("SQLITE_BUSY") or code == "55P03":
        return 503, "The database is busy: nothing was written, try again."
    if _is_missing_schema(code, error):
        return 503, SCHEMA_MISSING
    if code.startswith(("SQLITE_CONSTRAINT", "23")):
        # Two requests raced to create the same thing (a person by email, say).
        return 409, "Another request changed the same data at once: nothing was written, try again."
    return 503, "The database cannot be reached."


def configure_engine(engine: Engine) -> Engine:
    """Attach the service's connection settings and error handling to one engine.

    Bound to the app's own engines (and the check's pool), never to SQLAlchemy's
    ``Engine`` class: another library's engines in the same process stay as they are.
    """
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_sqlite)
    event.listen(engine, "handle_error", _reconnect_after_read_only)
    return engine


def init_db(app) -> None:
    """Bind the database, configure its engines and make each request one transaction."""
    db.init_app(app)
    with app.app_context():
        for engine in db.engines.values():
            configure_engine(engine)
    app.before_request(_end_with_commit_or_rollback)


def _end_with_commit_or_rollback() -> None:
    # Registered per request so it runs before every other after-request hook: they
    # then see, and add their headers to, the answer to a commit that failed.
    after_this_request(_commit_or_roll_back)


def _commit_or_roll_back(response):
    """Commit what a successful request wrote; a failed one leaves nothing behind."""
    if response.status_code >= 400:
        db.session.rollback()
        return response
    try:
        db.session.commit()
    except DBAPIError as error:
        # The commit itself failed (disk full, connection lost): nothing was written,
        # so the client gets the database error, not the answer it would have had.
        db.session.rollback()
        return current_app.make_response(current_app.handle_user_exception(error))
    return response


def insert_for_dialect(model):
    """An INSERT for the session's database, with its ``on_conflict_do_*`` (upserts)."""
    dialect = postgresql if db.session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(model)


def transaction_cache(name: str) -> dict:
    """A dict of the session's that lives as long as its current transaction.

    For what is true only until commit or rollback: the rows a transaction locked, the
    rows it read once. A new transaction finds it empty; no event listener is needed.
    """
    session = db.session()
    transaction = session.get_transaction()
    held = session.info.get(name)
    if held is None or held[0] is not transaction or transaction is None:
        held = session.info[name] = (transaction, {})
    return held[1]


def lock_row_once(model, site_id: int, cache_name: str):
    """Lock a site's head row (``model``) until commit; later calls reuse the locked row."""
    locked = transaction_cache(cache_name)
    if site_id in locked:
        return locked[site_id]
    row = db.session.execute(
        select(model)
        .where(model.site_id == site_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()
    # Looked up again: the statement may have begun the transaction the cache belongs to.
    transaction_cache(cache_name)[site_id] = row
    return row
