"""The transactional outbox: putting messages through the app's own connection.

The app's ``sqlite3.Connection`` on the store's file writes the messages in
the app's open transaction, so they commit or roll back with its next
commit; the backend's own connection and lock are not involved.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pmsq.backends.sqlite.errors import translate
from pmsq.backends.sqlite.journal import Journal
from pmsq.backends.types import Envelope
from pmsq.errors import ConfigurationError

__all__ = ["PlainRows", "in_app_transaction", "put_in_transaction"]

T = TypeVar("T")


class PlainRows:
    """Runs statements on a caller's connection with plain tuple rows (their row_factory aside)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        cur = self._conn.cursor()
        cur.row_factory = None
        return cur.execute(sql, args)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> sqlite3.Cursor:
        cur = self._conn.cursor()
        cur.row_factory = None
        return cur.executemany(sql, rows)


def check_same_file(path: str, connection: sqlite3.Connection) -> None:
    """Raise ``ConfigurationError`` unless ``connection`` is open on the store's file."""
    try:
        rows = connection.execute("PRAGMA database_list").fetchall()
    except sqlite3.Error as exc:
        raise ConfigurationError(f"connection= is not usable: {exc}") from exc
    main = next((r for r in rows if r[1] == "main"), None)
    theirs = main[2] if main else ""
    if path == ":memory:" or not theirs or (os.path.realpath(theirs) != os.path.realpath(path)):
        raise ConfigurationError(
            f"connection= is open on {theirs or 'an in-memory database'!r}, but this "
            f"broker's store is {path!r}; the outbox needs a connection to the same file"
        )


def put_in_transaction(
    connection: Any,
    envelopes: Sequence[Envelope],
    *,
    path: str,
    busy_timeout: float,
    retention: float | None,
    put: Callable[[Any, Journal], list[str]],
) -> list[str]:
    """Write ``envelopes`` in ``connection``'s transaction (opening one if none is open).

    Args:
        connection: The app's connection to the store's file.
        envelopes: The messages.
        path: The store's file.
        busy_timeout: For error messages.
        retention: The journal's retention (its events join the app's transaction).
        put: ``put(conn, journal)`` stores the envelopes and returns their ids.

    Raises:
        ConfigurationError: ``connection`` is not a ``sqlite3.Connection`` to the store's file.
    """
    return in_app_transaction(
        connection, path=path, busy_timeout=busy_timeout, retention=retention, work=put
    )


def in_app_transaction(
    connection: Any,
    *,
    path: str,
    busy_timeout: float,
    retention: float | None,
    work: Callable[[Any, Journal], T],
) -> T:
    """Run ``work(conn, journal)`` in ``connection``'s transaction (opening one if none is open).

    What ``work`` writes (and its journal events) commits or rolls back with
    the app's next commit or rollback; if ``work`` raises, only its own
    writes are undone (a savepoint) and the app's transaction stays open.

    Raises:
        ConfigurationError: ``connection`` is not a ``sqlite3.Connection`` to the store's file.
    """
    if not isinstance(connection, sqlite3.Connection):
        raise ConfigurationError(
            f"connection= must be a sqlite3.Connection for the SQLite backend, "
            f"got {type(connection).__name__}"
        )
    check_same_file(path, connection)
    plain = PlainRows(connection)
    # Its own journal buffer: the caller's connection is not under our lock.
    log = Journal(retention)
    try:
        if not connection.in_transaction:
            # Outside a transaction the savepoint below would be the outermost
            # one, and releasing it would commit the work on its own. Open
            # the app's transaction instead (IMMEDIATE: it is about to write),
            # so the work commits or rolls back with the app's next commit.
            plain.execute("BEGIN IMMEDIATE")
        plain.execute("SAVEPOINT pmsq_outbox")
        try:
            result = work(plain, log)
            log.flush(plain)
        except BaseException:
            plain.execute("ROLLBACK TO pmsq_outbox")
            plain.execute("RELEASE pmsq_outbox")
            raise
        plain.execute("RELEASE pmsq_outbox")
    except sqlite3.Error as exc:
        raise translate(exc, path, busy_timeout=busy_timeout) from exc
    return result


def bindings_on(path: str, connection: Any) -> list[tuple[str, str]]:
    """The bindings, read through the app's connection (``publish(connection=)``).

    Not under the backend's lock: the app's transaction may hold the file's
    write lock, which a writer holding that lock is waiting for.

    Raises:
        ConfigurationError: not a ``sqlite3.Connection`` on the store's file.
    """
    if not isinstance(connection, sqlite3.Connection):
        raise ConfigurationError(
            f"connection= must be a sqlite3.Connection for the SQLite backend, "
            f"got {type(connection).__name__}"
        )
    check_same_file(path, connection)
    rows = PlainRows(connection).execute("SELECT pattern, queue FROM pmsq_bindings ORDER BY 1, 2")
    return [(r[0], r[1]) for r in rows]
