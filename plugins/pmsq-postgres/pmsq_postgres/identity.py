"""Whether an app's connection reaches the store's own database (the outbox and ``once``).

A message written through a connection to another database would commit
with that database's transaction, separately from the store: the outbox
promise would be silently broken. A schema of the same name in another
database (a staging copy, a second tenant database on the same server) must
not pass for the store, so the check compares identities, not table names:
the database (name and oid) and the server (its postmaster start time,
which differs between two servers and changes on a restart).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from pmsq.errors import ConfigurationError

__all__ = ["IDENTITY_SQL", "DatabaseIdentity"]

IDENTITY_SQL = (
    "SELECT current_database(), d.oid::bigint, pg_postmaster_start_time()::text "
    "FROM pg_database d WHERE d.datname = current_database()"
)


class DatabaseIdentity:
    """The store's database identity, read once, compared with each app connection.

    Args:
        read_store: Runs ``IDENTITY_SQL`` on a store connection; returns its row.
        where: The store, as error messages name it.
    """

    def __init__(self, read_store: Callable[[], tuple[Any, ...]], where: str) -> None:
        self._read_store = read_store
        self._where = where
        self._lock = threading.Lock()
        self._store: tuple[Any, ...] | None = None
        # A connection never changes database or server: one check per connection.
        self._verified: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()

    def check(self, conn: psycopg.Connection[Any], what: str) -> None:
        """Refuse ``conn`` unless it reaches the store's database on the store's server.

        Args:
            conn: The app's connection (a transaction open on it, or autocommit).
            what: The caller, as the error names it (``"put(connection=...)"``).

        Raises:
            ConfigurationError: another database or another server.
            psycopg.Error: the query failed (the caller translates it).
        """
        if conn in self._verified:
            return
        theirs = tuple(conn.cursor(row_factory=tuple_row).execute(IDENTITY_SQL).fetchone() or ())
        with self._lock:
            if self._store is None or theirs != self._store:
                # Read again before refusing: a restarted server has a new start time.
                self._store = tuple(self._read_store())
            ours = self._store
        if theirs == ours:
            self._verified.add(conn)
        else:
            raise ConfigurationError(
                f"{what} must reach the database of the pmsq store {self._where}, but this "
                f"connection is on database {theirs[0] if theirs else '?'!r} "
                f"({_server(theirs)}), the store on {ours[0]!r} ({_server(ours)}); a message "
                "written there would commit separately from the store"
            )


def _server(row: tuple[Any, ...]) -> str:
    return f"server started {row[2]}" if len(row) > 2 else "unknown server"
