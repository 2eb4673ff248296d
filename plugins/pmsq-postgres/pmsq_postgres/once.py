"""Exactly-once effects on PostgreSQL: record a message id in the app's own transaction."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row

from pmsq.errors import ConfigurationError
from pmsq.message import Message
from pmsq_postgres.tx import SqlText

__all__ = ["begin_if_idle", "once_postgres"]


def begin_if_idle(connection: Any, what: str) -> psycopg.Connection[Any]:
    """Check ``connection`` and make sure a transaction is open on it.

    A non-autocommit connection opens one by itself at the next statement;
    an autocommit one outside ``conn.transaction()`` gets an explicit BEGIN,
    so pmsq's writes wait for the app's COMMIT either way.

    Raises:
        ConfigurationError: not a ``psycopg.Connection``, closed, or in a failed transaction.
    """
    if not isinstance(connection, psycopg.Connection):
        raise ConfigurationError(
            f"{what} needs the app's psycopg.Connection (psycopg 3) for the PostgreSQL "
            f"backend, got {type(connection).__name__}"
        )
    if connection.closed:
        raise ConfigurationError(f"{what}: the connection is closed")
    status = connection.info.transaction_status
    if status == TransactionStatus.INERROR:
        raise ConfigurationError(
            f"{what}: the connection's transaction already failed; roll it back first"
        )
    if status == TransactionStatus.IDLE and connection.autocommit:
        connection.execute("BEGIN")
    return connection


@contextlib.contextmanager
def once_postgres(
    message: Message, connection: Any, consumer: str | None, sql: SqlText
) -> Iterator[bool]:
    """Yield whether ``message`` is new for ``consumer``, recording it through ``connection``.

    The record goes into the store's ``once`` table inside the app's open
    transaction and is never committed here: the app's commit stores it with
    the app's effects, and a rollback undoes both. A second transaction
    recording the same id waits for the first to finish, then sees
    ``first=False`` if it committed.

    Raises:
        ConfigurationError: ``connection`` is not a usable psycopg connection, or
            does not reach the database holding the pmsq schema.
    """
    conn = begin_if_idle(connection, "once(connection=...)")
    cur = conn.cursor(row_factory=tuple_row)
    try:
        cur.execute(
            sql(
                "INSERT INTO {s}.once (consumer, message_id, recorded_at) VALUES (%s, %s, %s) "
                "ON CONFLICT DO NOTHING"
            ),
            (consumer or message.queue, message.id, time.time()),
        )
    except psycopg.errors.UndefinedTable as exc:
        raise ConfigurationError(
            f"once(connection=...) must reach the database holding the pmsq schema "
            f"{sql.schema!r}; this connection's database has no {sql.schema}.once table"
        ) from exc
    yield cur.rowcount == 1
