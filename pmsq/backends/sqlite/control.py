"""Message control in the SQLite store: cancel, reschedule, and the ``Control`` family mixin.

Cancel and reschedule run in one ``BEGIN IMMEDIATE`` transaction of the
backend, or (cancel with ``connection=``) inside the app's own open
transaction on the same file, like the outbox: the removal then commits or
rolls back with the app's rows. Pauses and circuit breakers live in
:mod:`pmsq.backends.sqlite.pauses`; claims and settlements consult them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pmsq.backends.control_family import Control
from pmsq.backends.sqlite import counters, outbox, pauses
from pmsq.backends.sqlite.journal import CLAIM_COLUMNS, Event, Journal, carried
from pmsq.backends.sqlite.lines import promote_next
from pmsq.backends.sqlkit.rows import tenant_in
from pmsq.backends.sqlkit.states import (
    IN_FLIGHT,
    LIVE,
    READY,
    SCHEDULED,
    peek_name,
    sql_set,
    waiting_state,
)
from pmsq.backends.types import PauseRecord

if TYPE_CHECKING:
    import sqlite3

__all__ = ["SQLiteControl", "cancel_rows", "reschedule"]

T = TypeVar("T")

_CHUNK = 500
_COLUMNS = f"seq, id, tenant, key, state, head, attempt, correlation_id, {CLAIM_COLUMNS}"


def cancel_rows(
    conn: Any, journal: Journal, queue: str, rows: Sequence[Sequence[Any]], now: float
) -> list[str]:
    """Delete selected ``rows`` (``_COLUMNS``) and free their keys; the ids removed.

    Deleting a row whose lease is held makes its holder's settle and extend
    find no row for their token: ``LeaseLost``, nothing changed.
    """
    if not rows:
        return []
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        conn.execute(f"DELETE FROM pmsq_messages WHERE seq IN ({marks})", [r[0] for r in chunk])
    tally = counters.Tally()
    for r in rows:
        tally.move(queue, r[2], counters.kind(r[4], r[5]), None)
    tally.flush(conn)
    # After every delete: the first message left in each line becomes its head.
    for tenant, key in {(r[2], r[3]) for r in rows if r[3] is not None}:
        promote_next(conn, queue, tenant, key)
    for _seq, mid, tenant, key, state, head, attempt, correlation, *claim_facts in rows:
        # Cancelling a message in flight ends its delivery: this row tells it.
        worker, delivery = carried(state == IN_FLIGHT, claim_facts)
        journal.add(
            now,
            Event.CANCELLED,
            mid,
            queue,
            tenant,
            key,
            correlation,
            attempt=attempt or None,
            worker=worker,
            delivery=delivery,
            state=peek_name(state, head),
        )
    return [str(r[1]) for r in rows]


def select_ids(conn: Any, queue: str, ids: Sequence[str], tenant: str | None) -> list[Any]:
    """The unsettled rows of ``queue`` among ``ids`` (only ``tenant``'s unless None)."""
    out: list[Any] = []
    unique = list(dict.fromkeys(ids))
    for start in range(0, len(unique), _CHUNK):
        chunk = unique[start : start + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        sql = (
            f"SELECT {_COLUMNS} FROM pmsq_messages WHERE id IN ({marks}) AND queue = ? "
            f"AND state IN {LIVE}"
        )
        args: list[Any] = [*chunk, queue]
        if tenant is not None:
            sql += " AND tenant = ?"
            args.append(tenant_in(tenant))
        out.extend(tuple(r) for r in conn.execute(sql, args).fetchall())
    return out


def select_key(conn: Any, queue: str, key: str, tenant: str | None) -> list[Any]:
    """The unsettled rows of ``tenant``'s ``key`` (every one of them is in the key's line)."""
    return [
        tuple(r)
        for r in conn.execute(
            f"SELECT {_COLUMNS} FROM pmsq_messages WHERE queue = ? AND tenant = ? AND key = ? "
            f"AND line = 1 AND key IS NOT NULL AND state IN {LIVE} ORDER BY seq",
            (queue, tenant_in(tenant), key),
        ).fetchall()
    ]


def reschedule(
    conn: Any,
    journal: Journal,
    queue: str,
    message_id: str,
    available_at: float,
    tenant: str | None,
    now: float,
) -> bool:
    """Move a waiting or delayed message's due time; its ``seq`` (key order) is kept."""
    where = f"id = ? AND queue = ? AND state IN {sql_set(READY, SCHEDULED)}"
    args: list[Any] = [message_id, queue]
    if tenant is not None:
        where += " AND tenant = ?"
        args.append(tenant_in(tenant))
    found = conn.execute(f"SELECT seq, state, head FROM pmsq_messages WHERE {where}", args)
    old = found.fetchone()
    if old is None:
        return False
    state = waiting_state(available_at, now)
    row = conn.execute(
        # The token of an expired, unclaimed lease goes: its late holder's
        # settle must not undo the new due time.
        "UPDATE pmsq_messages SET available_at = ?, state = ?, lease_token = NULL "
        "WHERE seq = ? RETURNING tenant, key, correlation_id, attempt",
        (available_at, state, old[0]),
    ).fetchone()
    counters.bump(conn, queue, row[0], counters.kind(old[1], old[2]), counters.kind(state, old[2]))
    journal.add(
        now,
        Event.RESCHEDULED,
        message_id,
        queue,
        row[0],
        row[1],
        row[2],
        attempt=row[3] or None,
        available_at=available_at,
        delay=round(available_at - now, 3),
    )
    return True


class SQLiteControl(Control):
    """The control family for ``SQLiteBackend`` (mixed into it)."""

    if TYPE_CHECKING:
        _journal: Journal
        path: str
        busy_timeout: float

        def _write(self, fn: Callable[[sqlite3.Connection], T], *, sync: bool = True) -> T: ...

        def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    def _cancel(
        self,
        select: Callable[[Any], list[Any]],
        queue: str,
        now: float,
        connection: Any,
    ) -> list[str]:
        if connection is None:
            return self._write(lambda c: cancel_rows(c, self._journal, queue, select(c), now))
        return outbox.in_app_transaction(
            connection,
            path=self.path,
            busy_timeout=self.busy_timeout,
            retention=self._journal.retention,
            work=lambda c, log: cancel_rows(c, log, queue, select(c), now),
        )

    def cancel(
        self,
        queue: str,
        message_ids: Sequence[str],
        *,
        tenant: str | None = None,
        now: float,
        connection: Any = None,
    ) -> list[str]:
        if not message_ids:
            return []
        return self._cancel(
            lambda c: select_ids(c, queue, message_ids, tenant), queue, now, connection
        )

    def cancel_key(
        self,
        queue: str,
        key: str,
        *,
        tenant: str | None,
        now: float,
        connection: Any = None,
    ) -> list[str]:
        return self._cancel(lambda c: select_key(c, queue, key, tenant), queue, now, connection)

    def reschedule(
        self,
        queue: str,
        message_id: str,
        available_at: float,
        *,
        tenant: str | None = None,
        now: float,
    ) -> bool:
        return self._write(
            lambda c: reschedule(c, self._journal, queue, message_id, available_at, tenant, now)
        )

    def pause(self, record: PauseRecord, *, now: float) -> None:
        self._write(lambda c: pauses.save_pause(c, self._journal, record, now))

    def resume(self, queue: str, tenant: str | None, key: str | None, *, now: float) -> bool:
        return self._write(lambda c: pauses.remove_pause(c, self._journal, queue, tenant, key, now))

    def pauses(self, *, now: float) -> list[PauseRecord]:
        return self._read(lambda c: pauses.list_pauses(c, now))
