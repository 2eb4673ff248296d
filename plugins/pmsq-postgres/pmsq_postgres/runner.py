"""Transactions on the pool: one short transaction per call, run again when the server says so.

Every call borrows a pooled connection and runs one short READ COMMITTED
transaction. A transaction that PostgreSQL aborts as a deadlock victim or
serialization failure was rolled back whole and is simply run again.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool, PoolTimeout

from pmsq.backends.sqlkit.metrics import Metrics
from pmsq.errors import StorageError
from pmsq_postgres.errors import RETRYABLE, translate
from pmsq_postgres.notify import channel_name
from pmsq_postgres.schema import SchemaError, create_or_migrate
from pmsq_postgres.tx import SqlText, Tx

__all__ = ["Runner", "create_schema"]

T = TypeVar("T")
_MAX_TRIES = 8


class _Again(Exception):
    """The transaction was rolled back by the server and may simply run again."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def create_schema(
    conninfo: str, kwargs: dict[str, Any], sql: SqlText, where: str, busy_timeout: float
) -> None:
    """Create or migrate the store's schema over a connection of its own.

    Raises:
        StorageError: the schema holds foreign tables or a newer pmsq's store.
        BackendUnavailable: the server cannot be reached.
    """
    try:
        # A first contact that fails fast and says why (the pool would only time out).
        first: dict[str, Any] = dict(kwargs)
        if "connect_timeout" not in conninfo:
            first["connect_timeout"] = 10
        with psycopg.connect(conninfo, **first) as conn:
            create_or_migrate(conn, sql)
    except SchemaError as exc:
        raise StorageError(
            f"PostgreSQL store {where} cannot be opened by pmsq: {exc}; nothing was changed"
        ) from exc
    except psycopg.Error as exc:
        raise translate(exc, where, busy_timeout=busy_timeout) from exc


class Runner:
    """Runs functions of a :class:`Tx` in transactions on ``pool``.

    Args:
        pool: The backend's connection pool.
        sql: The schema's SQL formatter.
        where: The store's name in error messages.
        busy_timeout: For error messages.
        notifies: Whether transactions send NOTIFY for queues that got work.
        metrics: Where committed transactions' outcome counts go.
    """

    def __init__(
        self,
        pool: ConnectionPool[psycopg.Connection[Any]],
        sql: SqlText,
        where: str,
        busy_timeout: float,
        notifies: bool,
        metrics: Metrics,
    ) -> None:
        self.pool = pool
        self.sql = sql
        self.where = where
        self.busy_timeout = busy_timeout
        self.notifies = notifies
        self._metrics = metrics
        self.closed = False

    def check_open(self) -> None:
        """Raise ``StorageError`` once the backend is closed."""
        if self.closed:
            raise StorageError(f"the broker for {self.where} is closed")

    def run(self, fn: Callable[[Tx], T], *, relaxed: bool = False) -> T:
        """Run ``fn`` in one transaction on a pooled connection; commit; count its outcomes.

        ``relaxed`` commits without waiting for the WAL flush. Only claims use
        it: losing a claim to a server crash merely makes its message
        deliverable again, which at-least-once delivery allows, and any later
        durable commit (the ack) flushes the claim's WAL record first.
        """
        self.check_open()
        tries = 0
        while True:
            tries += 1
            try:
                result, tx = self._transaction(fn, relaxed)
            except _Again as again:
                if tries >= _MAX_TRIES:
                    raise translate(
                        again.cause, self.where, busy_timeout=self.busy_timeout
                    ) from again.cause
                time.sleep(random.uniform(0, 0.002 * tries))
                continue
            for queue, tenant, counts in tx.outcomes:
                self._metrics.add(queue, tenant, **counts)
            return result

    def _transaction(self, fn: Callable[[Tx], T], relaxed: bool) -> tuple[T, Tx]:
        # Pipeline mode: BEGIN travels with the first statement and COMMIT with
        # the last ones whose results nobody waits for, so a transaction costs
        # one round trip per result actually read, not one per statement.
        committing = False
        try:
            with self.pool.connection() as conn:
                tx = Tx(conn, self.sql)
                try:
                    with conn.pipeline():
                        conn.execute("BEGIN")
                        if relaxed:
                            conn.execute("SET LOCAL synchronous_commit = off")
                        result = fn(tx)
                        if tx.notify and self.notifies:
                            self.send_notify(tx)
                        committing = True
                        conn.execute("COMMIT")
                except BaseException as exc:
                    if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
                        with contextlib.suppress(psycopg.Error):
                            conn.execute("ROLLBACK")
                    if not isinstance(exc, psycopg.Error):
                        raise
                    state = getattr(exc.diag, "sqlstate", None)
                    if state in RETRYABLE or (
                        not committing and isinstance(exc, psycopg.OperationalError)
                    ):
                        # Rolled back whole (or a pooled connection the server had
                        # dropped, before COMMIT was sent): safe to run again.
                        raise _Again(exc) from exc
                    raise translate(
                        exc, self.where, busy_timeout=self.busy_timeout, committing=committing
                    ) from exc
                return result, tx
        except PoolTimeout as exc:
            raise translate(exc, self.where, busy_timeout=self.busy_timeout) from exc

    def read(self, fn: Callable[[Tx], T]) -> T:
        """Run a single-statement read outside any explicit transaction (autocommit)."""
        self.check_open()
        try:
            with self.pool.connection() as conn:
                return fn(Tx(conn, self.sql))
        except PoolTimeout as exc:
            raise translate(exc, self.where, busy_timeout=self.busy_timeout) from exc
        except psycopg.Error as exc:
            raise translate(exc, self.where, busy_timeout=self.busy_timeout) from exc

    def send_notify(self, tx: Tx) -> None:
        """NOTIFY the store's channel of each queue in ``tx.notify`` (sent at commit)."""
        tx.execute(
            "SELECT pg_notify(%s, q) FROM unnest(%s::text[]) AS q",
            (channel_name(self.sql.schema), sorted(tx.notify)),
        )
