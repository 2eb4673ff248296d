"""Exactly-once effects: record a message id in the app's own transaction."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

from pmsq.errors import ConfigurationError
from pmsq.message import Message

__all__ = ["once_sqlite"]

_DDL = (
    "CREATE TABLE IF NOT EXISTS pmsq_once (consumer TEXT NOT NULL, message_id TEXT NOT NULL, "
    "recorded_at REAL NOT NULL, PRIMARY KEY (consumer, message_id)) WITHOUT ROWID"
)


@contextlib.contextmanager
def once_sqlite(message: Message, connection: Any, consumer: str | None = None) -> Iterator[bool]:
    """Yield whether ``message`` is new for ``consumer`` in the app's SQLite database.

    The record is written through ``connection`` inside its transaction (one
    is begun if none is open) and never committed here: the app's commit
    stores the record and the app's effects together, and a rollback undoes both.

    Raises:
        ConfigurationError: ``connection`` is not a ``sqlite3.Connection``.
    """
    if not isinstance(connection, sqlite3.Connection):
        raise ConfigurationError(
            "once(connection=...) needs the app's sqlite3.Connection, "
            f"got {type(connection).__name__}"
        )
    name = consumer or message.queue
    if not connection.in_transaction:
        # IMMEDIATE: a deferred transaction that reads first and then writes fails at
        # once with SQLITE_BUSY when another connection wrote in between (WAL snapshot).
        connection.execute("BEGIN IMMEDIATE")
    cur = connection.cursor()
    cur.execute(_DDL)
    cur.execute(
        "INSERT OR IGNORE INTO pmsq_once (consumer, message_id, recorded_at) VALUES (?, ?, ?)",
        (name, message.id, time.time()),
    )
    yield cur.rowcount == 1
