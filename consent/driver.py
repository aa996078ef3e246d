"""Statements sent on the driver: a record batch's reads under its chain lock (the lock
itself, earlier answers, current states) and its writes, without the Core per statement.

The Core's work per execution (compiled-cache lookup, execution context, result set)
costs several times what the driver itself takes for a one-row insert (71 against
15 µs on PostgreSQL, 26 against 8 on SQLite), and a batch waits for each statement's
answer in turn while it holds the chain lock. Here a statement is compiled by
SQLAlchemy once per dialect and row count, an INSERT's rows in one statement, and its
values are handed to the DBAPI cursor, converted as the Core converts them (each column
type's bind processor). The statements sent in one
``sent_together`` block go to PostgreSQL in one round trip (psycopg's pipeline mode);
SQLite, in process, runs them one by one. A driver error comes out as the Core's
(``DBAPIError`` and its subclasses), its connection invalidated if it was lost.
``ReservedIds`` gives new rows their ids before they are sent, so that rows pointing at
them need not wait for a ``RETURNING``: a batch's writes are then one round trip.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import psycopg
from sqlalchemy import Table, and_, bindparam, or_, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)


#: Rows per INSERT statement: one statement (one parse, one run of the table's statement
#: triggers) for a whole batch, within the drivers' limits on parameters.
ROWS_PER_INSERT = 64


@functools.cache
def _numbered(dialect_class):
    """The dialect, writing parameters as ``$1, $2``: psycopg's raw cursor takes them as
    they are, where converting ``%(name)s`` is cached only for short statements (a
    batch's insert would be parsed again on every execute)."""
    return dialect_class(paramstyle="numeric_dollar")


@functools.cache
def _compiled(statement, dialect, keys: tuple[str, ...], count: int, numbered: bool) -> tuple:
    """The statement's SQL for a dialect, for ``count`` rows of these keys (an INSERT's
    VALUES repeated; an UPDATE or a query: one), with positional parameters
    (``numbered``: ``$n``, for psycopg's raw cursor): each one's row and key, and converter."""
    if statement.is_insert:
        columns = statement.table.c
        statement = statement.values(
            [
                {key: bindparam(f"{key}_{row}", type_=columns[key].type) for key in keys}
                for row in range(count)
            ]
        )
        sources = {f"{key}_{row}": (row, key) for row in range(count) for key in keys}
    else:  # an UPDATE's or a query's values are its own bind parameters, one row
        sources = {key: (0, key) for key in keys}
    compiled = statement.compile(dialect=_numbered(type(dialect)) if numbered else dialect)
    names = tuple(compiled.positiontup if compiled.positional else compiled.binds)
    missing = set(names) - set(sources)
    if missing:
        raise ValueError(f"no value given for {sorted(missing)}")
    processors = tuple(
        compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
    )
    return str(compiled), tuple(sources[name] for name in names), processors


@contextmanager
def sent_together(connection: Connection, *, commit: bool = False) -> Iterator[Callable[..., None]]:
    """``send(statement, rows)`` for each statement, all sent at once.

    Rows are dicts with the same keys (their ids among them: ``ReservedIds``).
    ``commit``: the connection's transaction ends with these statements, its COMMIT in
    the same round trip on PostgreSQL (the Core's own commit then finds nothing to do).
    """
    driver = connection.connection.driver_connection
    dialect = connection.dialect
    is_psycopg = isinstance(driver, psycopg.Connection)

    def send(statement, rows: Sequence[dict[str, Any]]) -> None:
        keys = tuple(rows[0]) if rows else ()
        size = ROWS_PER_INSERT if statement.is_insert else 1
        for chunk in chunks(rows, size):  # psycopg: each sent now, answered later
            sql, sources, processors = _compiled(statement, dialect, keys, len(chunk), is_psycopg)
            values = [
                convert(chunk[row][key]) if convert else chunk[row][key]
                for (row, key), convert in zip(sources, processors, strict=True)
            ]
            cursor = psycopg.RawCursor(driver) if is_psycopg else driver.cursor()
            cursor.execute(sql, values)  # positional: ``$n`` on psycopg, ``?`` on SQLite

    error_type = dialect.loaded_dbapi.Error
    # libpq before 14 has no pipeline mode: the statements then go one by one.
    is_pipelined = is_psycopg and psycopg.Pipeline.is_supported()
    committed = driver.cursor() if commit and is_psycopg else None
    try:
        with driver.pipeline() if is_pipelined else nullcontext():
            yield send
            if committed is not None:  # queued like the rest (commit() would sync apart)
                committed.execute("COMMIT")
    except error_type as error:
        if committed is not None and committed.statusmessage == "COMMIT":
            # Written for good: a later error must not have the batch written again.
            log.warning("error after the batch committed: %s", error.__class__.__name__)
            return
        raise _core_error(connection, error) from error
    if committed is not None and committed.statusmessage != "COMMIT":
        # An aborted transaction answers COMMIT with ROLLBACK, and no error.
        raise DBAPIError.instance(
            "COMMIT", None, error_type("the batch was rolled back"), error_type, dialect=dialect
        )


def fetched(connection: Connection, statement, params: Mapping[str, Any]) -> list[tuple]:
    """The rows of a query run on the driver, as ``sent_together`` sends writes: its SQL
    compiled once per dialect, ``params`` by bind parameter name, each column converted
    as the Core converts it. An ``IN`` takes a parameter per item (``each``), not an
    expanding one: the statement is built once per count."""
    [rows] = fetched_together(connection, [(statement, params)])
    return rows


def fetched_together(
    connection: Connection, queries: Sequence[tuple[Any, Mapping[str, Any]]]
) -> list[list[tuple]]:
    """The rows of each query, as ``fetched``; on PostgreSQL all sent in one round trip,
    run by the server one after the other (a query after a lock runs once it is held)."""
    driver = connection.connection.driver_connection
    dialect = connection.dialect
    is_psycopg = isinstance(driver, psycopg.Connection)
    cursors = []
    try:
        with driver.pipeline() if is_psycopg and len(queries) > 1 else nullcontext():
            for statement, params in queries:
                sql, sources, processors = _compiled(
                    statement, dialect, tuple(params), 1, is_psycopg
                )
                values = [
                    convert(params[key]) if convert else params[key]
                    for (_, key), convert in zip(sources, processors, strict=True)
                ]
                cursor = psycopg.RawCursor(driver) if is_psycopg else driver.cursor()
                cursor.execute(sql, values)
                cursors.append(cursor if is_psycopg else cursor.fetchall())
        fetched_rows = [cursor.fetchall() if is_psycopg else cursor for cursor in cursors]
    except dialect.loaded_dbapi.Error as error:
        raise _core_error(connection, error) from error
    return [
        _converted(rows, _result_processors(statement, dialect))
        for rows, (statement, _) in zip(fetched_rows, queries, strict=True)
    ]


def _converted(rows: list[tuple], converters: tuple) -> list[tuple]:
    if not any(converters):
        return rows
    return [
        tuple(
            convert(value) if convert else value
            for convert, value in zip(converters, row, strict=True)
        )
        for row in rows
    ]


def each(name: str, count: int, type_) -> list:
    """``count`` bind parameters ``name_0``, ``name_1`` ... for an ``IN`` sent by ``fetched``."""
    return [bindparam(f"{name}_{index}", type_=type_) for index in range(count)]


def values_of_each(name: str, values: Sequence[Any]) -> dict[str, Any]:
    """The parameters of ``each(name, len(values), ...)``, by name."""
    return {f"{name}_{index}": value for index, value in enumerate(values)}


def any_row(columns: Sequence, rows: Sequence[Sequence]):
    """``(columns) IN (rows)`` written as one equality per row, ORed: SQLite plans a
    row-value ``IN`` of two rows or more as a scan of the whole table, each
    ``a = ? AND b = ?`` as a search of an index (PostgreSQL plans both alike). At most
    ``ROWS_PER_CONDITION`` rows: SQLite refuses an expression deeper than 1,000
    (``SQLITE_MAX_EXPR_DEPTH``), and each ``OR`` is a level."""
    return or_(
        *(and_(*(c == value for c, value in zip(columns, row, strict=True))) for row in rows)
    )


#: Rows ``any_row`` is given at most (the caller reads or deletes in ``chunks``).
ROWS_PER_CONDITION = 100


def chunks(items: Sequence, size: int) -> list[Sequence]:
    """``items`` in consecutive slices of at most ``size``."""
    return [items[start : start + size] for start in range(0, len(items), size)]


@functools.cache
def _result_processors(statement, dialect) -> tuple:
    return tuple(
        column.type.dialect_impl(dialect).result_processor(dialect, None)
        for column in getattr(statement, "selected_columns", ())
    )


def _core_error(connection: Connection, error: Exception) -> DBAPIError:
    """A driver error as the Core raises it, its connection invalidated if it was lost."""
    dialect = connection.dialect
    is_lost = dialect.is_disconnect(error, connection.connection.driver_connection, None)
    if is_lost:
        connection.invalidate()
    return DBAPIError.instance(
        None,
        None,
        error,
        dialect.loaded_dbapi.Error,
        connection_invalidated=is_lost,
        dialect=dialect,
    )


class ReservedIds:
    """Primary keys for a batch's new rows, known before the rows are sent, so that the
    rows that point at them (a visitor at its subject, a state at its record) go in the
    same round trip rather than waiting for ``RETURNING``, with the chain lock held.

    PostgreSQL: taken from each table's sequence a block at a time and kept by the
    process, so ids follow no order across processes (nothing is ordered by them; the
    chain has its own ``sequence``). SQLite: the writer has locked the database, so the
    next after the largest, as SQLite itself would choose.
    """

    #: Ids taken from a sequence at once (one statement, now and then).
    BLOCK = 64

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[str, list[int]] = {}

    def take(self, connection: Connection, counts: Mapping[Table, int]) -> dict[Table, list[int]]:
        """``count`` new ids for each table (its ``id`` column), in the connection's
        transaction (on SQLite, one that has locked the database)."""
        wanted = tuple(table for table, count in counts.items() if count)
        if connection.dialect.name != "postgresql":
            tops = fetched(connection, _largest_ids(wanted), {})[0] if wanted else ()
            after = {table: top or 0 for table, top in zip(wanted, tops, strict=True)}
            return {
                table: list(range(after.get(table, 0) + 1, after.get(table, 0) + 1 + count))
                for table, count in counts.items()
            }
        with self._lock:
            short = tuple(t for t in wanted if len(self._kept.setdefault(t.name, [])) < counts[t])
            if short:
                block = {"block": max(self.BLOCK, *counts.values())}
                rows = connection.execute(_next_ids(short), block).all()
                for table, ids in zip(short, zip(*rows, strict=True), strict=True):
                    self._kept[table.name] += ids
            taken = {}
            for table, count in counts.items():
                kept = self._kept.setdefault(table.name, [])
                taken[table], kept[:] = kept[:count], kept[count:]
            return taken


@functools.cache
def _largest_ids(tables: tuple[Table, ...]):
    return text("SELECT " + ", ".join(f"(SELECT max(id) FROM {t.name})" for t in tables))


@functools.cache
def _next_ids(tables: tuple[Table, ...]):
    """``block`` rows of the next ids of each table's sequence, a column a table."""
    columns = ", ".join(f"nextval(pg_get_serial_sequence('{t.name}', 'id'))" for t in tables)
    return text(f"SELECT {columns} FROM generate_series(1, :block)")
