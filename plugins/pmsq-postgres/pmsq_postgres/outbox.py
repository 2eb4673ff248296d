"""The transactional outbox: putting messages in the app's open transaction, never committing.

The app's psycopg connection to the store's database writes the messages
inside a savepoint of the app's transaction, so they commit or roll back
with the app's own commit; NOTIFY wake-ups go out only if it commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from pmsq.backends.types import Envelope
from pmsq.errors import ConfigurationError
from pmsq_postgres import puts
from pmsq_postgres.errors import translate
from pmsq_postgres.identity import DatabaseIdentity
from pmsq_postgres.once import begin_if_idle
from pmsq_postgres.runner import Runner
from pmsq_postgres.tx import Tx

__all__ = ["put_in_transaction"]


def put_in_transaction(
    runner: Runner,
    configs: puts.ConfigReader,
    connection: Any,
    envelopes: Sequence[Envelope],
    now: float,
    identity: DatabaseIdentity | None = None,
) -> list[str]:
    """Write ``envelopes`` through ``connection`` in its open transaction (or a new one).

    Raises:
        ConfigurationError: ``connection`` is not a psycopg connection to the store's database.
    """
    runner.check_open()
    conn = begin_if_idle(connection, "put(connection=...)")
    tx = Tx(conn, runner.sql)
    schema = runner.sql.schema
    try:
        if identity is not None:
            identity.check(conn, "put(connection=...)")
        found = tx.one("SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}".messages',))
        if not found or not found[0]:
            raise ConfigurationError(
                f"connection= must reach the database of the pmsq store {runner.where}; "
                f"its database has no {schema}.messages table"
            )
        tx.execute("SAVEPOINT pmsq_outbox")
        try:
            ids = puts.put_many(tx, configs, envelopes, now)
            if tx.notify and runner.notifies:
                runner.send_notify(tx)  # delivered when (and if) the app commits
        except BaseException:
            tx.execute("ROLLBACK TO SAVEPOINT pmsq_outbox")
            tx.execute("RELEASE SAVEPOINT pmsq_outbox")
            raise
        tx.execute("RELEASE SAVEPOINT pmsq_outbox")
    except psycopg.Error as exc:
        raise translate(exc, runner.where, busy_timeout=runner.busy_timeout) from exc
    return ids
