"""The transactional outbox: writing in the app's open transaction, never committing.

Puts (``put(connection=)``) and cancels (``cancel(connection=)``) both go
through :func:`in_app_transaction`.

The app's psycopg connection to the store's database writes the messages
inside a savepoint of the app's transaction, so they commit or roll back
with the app's own commit; NOTIFY wake-ups go out only if it commits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg

from pmsq.backends.types import Envelope
from pmsq.errors import ConfigurationError
from pmsq_postgres import puts
from pmsq_postgres.errors import translate
from pmsq_postgres.identity import DatabaseIdentity
from pmsq_postgres.once import begin_if_idle
from pmsq_postgres.runner import Runner
from pmsq_postgres.tx import Tx

__all__ = ["in_app_transaction", "put_in_transaction"]

T = TypeVar("T")


def in_app_transaction(
    runner: Runner,
    connection: Any,
    fn: Callable[[Tx], T],
    *,
    what: str,
    identity: DatabaseIdentity | None = None,
) -> T:
    """Run ``fn`` through the app's ``connection`` in its open transaction (or a new one).

    ``fn`` runs inside a savepoint: if it fails, its writes are undone and
    the app's transaction stays usable. Nothing is committed; NOTIFY
    wake-ups go out with the app's commit.

    Raises:
        ConfigurationError: ``connection`` is not a psycopg connection to the store's database.
    """
    runner.check_open()
    conn = begin_if_idle(connection, what)
    tx = Tx(conn, runner.sql)
    schema = runner.sql.schema
    try:
        if identity is not None:
            identity.check(conn, what)
        found = tx.one("SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}".messages',))
        if not found or not found[0]:
            raise ConfigurationError(
                f"connection= must reach the database of the pmsq store {runner.where}; "
                f"its database has no {schema}.messages table"
            )
        tx.execute("SAVEPOINT pmsq_outbox")
        try:
            result = fn(tx)
            if tx.notify and runner.notifies:
                runner.send_notify(tx)  # delivered when (and if) the app commits
        except BaseException:
            tx.execute("ROLLBACK TO SAVEPOINT pmsq_outbox")
            tx.execute("RELEASE SAVEPOINT pmsq_outbox")
            raise
        tx.execute("RELEASE SAVEPOINT pmsq_outbox")
    except psycopg.Error as exc:
        raise translate(exc, runner.where, busy_timeout=runner.busy_timeout) from exc
    return result


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
    return in_app_transaction(
        runner,
        connection,
        lambda tx: puts.put_many(tx, configs, envelopes, now),
        what="put(connection=...)",
        identity=identity,
    )
