"""The message journal: what happened to each message, for ``pmsq trace``.

Events are collected in memory while a write transaction runs and inserted
with one ``executemany`` just before its COMMIT, so the journal holds exactly
the state changes that committed, in the same fsync (a rolled-back
transaction leaves no event). Rows older than the retention period are
pruned in bounded batches by the backend's housekeeping.

Event names: ``put``, ``dedup_hit``, ``coalesced``, ``delivered``, ``acked``,
``retried``, ``lease_expired``, ``dead_lettered``, ``released``,
``redriven``, ``purged``; message control adds ``cancelled``,
``rescheduled``, ``expired``, ``snoozed``, ``paused``, ``resumed``,
``circuit_opened`` and ``circuit_closed`` (the last four belong to a
paused scope, not a message: their ``message_id`` is ``""``).

Cheap by design: every event updates the table and one index (by message);
only ``put`` events, one per message, are also indexed by key, and by
correlation id only when the message is not the first of its chain (a
message put outside any handler starts its own chain: most puts add no
correlation entry). A key's or a chain's history is found through the puts
of its messages, then their events by message id. The key index leads with the
key: ``pmsq trace --key K`` is usually asked without a queue or tenant.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from collections.abc import Sequence
from typing import Any, Final

from pmsq.backends.types import HistoryEvent

# Reused: json.dumps with options builds a new encoder on every call.
_ENCODER = json.JSONEncoder(separators=(",", ":"))

__all__ = ["JOURNAL_DDL", "Event", "Journal", "history", "prune", "query"]


class Event:
    """What happened to a message: the ``event`` column of the journal.

    Plain ``str`` constants, not an enum: the journal row of every ack binds
    one, and SQLite binds an exact ``str`` without looking for an adapter.
    """

    PUT: Final = "put"
    DEDUP_HIT: Final = "dedup_hit"
    COALESCED: Final = "coalesced"
    DELIVERED: Final = "delivered"
    ACKED: Final = "acked"
    RETRIED: Final = "retried"
    LEASE_EXPIRED: Final = "lease_expired"
    DEAD_LETTERED: Final = "dead_lettered"
    RELEASED: Final = "released"
    REDRIVEN: Final = "redriven"
    PURGED: Final = "purged"
    # Message control (the Control family; pause events have message_id "").
    CANCELLED: Final = "cancelled"
    RESCHEDULED: Final = "rescheduled"
    EXPIRED: Final = "expired"
    SNOOZED: Final = "snoozed"
    PAUSED: Final = "paused"
    RESUMED: Final = "resumed"
    CIRCUIT_OPENED: Final = "circuit_opened"
    CIRCUIT_CLOSED: Final = "circuit_closed"


JOURNAL_DDL = f"""
CREATE TABLE IF NOT EXISTS pmsq_journal (
    seq INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    message_id TEXT NOT NULL,
    queue TEXT NOT NULL,
    tenant TEXT NOT NULL,
    key TEXT,
    correlation_id TEXT,
    event TEXT NOT NULL,
    attempt INTEGER,
    worker TEXT,
    process TEXT,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS pmsq_ix_journal_message ON pmsq_journal (message_id);
CREATE INDEX IF NOT EXISTS pmsq_ix_journal_key
    ON pmsq_journal (key, queue, tenant, at) WHERE event = '{Event.PUT}' AND key IS NOT NULL;
CREATE INDEX IF NOT EXISTS pmsq_ix_journal_correlation
    ON pmsq_journal (correlation_id) WHERE event = '{Event.PUT}' AND correlation_id != message_id;
"""

# One housekeeping pass deletes at most this many events: a bounded write
# lock. A pass that filled its batch asks for another at the next commit.
PRUNE_BATCH = 2000
_MAX_TEXT = 500


def _short(text: str | None) -> str | None:
    """The last line of a traceback (``Type: message``), cut to a sane length."""
    if not text:
        return None
    lines = [line for line in text.strip().splitlines() if line.strip()]
    last = lines[-1].strip() if lines else text
    return last[:_MAX_TEXT]


def duration_detail(duration_ms: float | None) -> str | None:
    """The detail :meth:`Journal.add` writes for an event whose only detail is its handler time.

    Built without the encoder for the per-message hot path (acks).
    """
    return None if duration_ms is None else f'{{"duration_ms":{duration_ms!r}}}'


class Journal:
    """Collects one transaction's events; ``retention=None`` makes every call a no-op.

    Used only under the backend's lock, one transaction at a time.

    Args:
        retention: Seconds events are kept, or ``None`` for no journal at all.
    """

    def __init__(self, retention: float | None) -> None:
        self.retention = retention
        self._rows: list[tuple[Any, ...]] = []
        self.process = f"{socket.gethostname()}:{os.getpid()}"

    @property
    def enabled(self) -> bool:
        return self.retention is not None

    def add(
        self,
        at: float,
        event: str,
        message_id: str,
        queue: str,
        tenant: str,
        key: str | None,
        correlation_id: str | None,
        *,
        attempt: int | None = None,
        worker: str | None = None,
        **detail: Any,
    ) -> None:
        """Record one event (nothing is written until :meth:`flush`).

        ``error`` in ``detail`` is cut to the last line of its traceback.
        """
        if self.retention is None:
            return
        if "error" in detail:
            detail["error"] = _short(detail["error"])
        clean = {k: v for k, v in detail.items() if v is not None}
        self.add_row(
            at,
            event,
            message_id,
            queue,
            tenant,
            key,
            correlation_id,
            attempt,
            worker,
            _ENCODER.encode(clean) if clean else None,
        )

    def add_row(
        self,
        at: float,
        event: str,
        message_id: str,
        queue: str,
        tenant: str,
        key: str | None,
        correlation_id: str | None,
        attempt: int | None,
        worker: str | None,
        detail: str | None,
    ) -> None:
        """:meth:`add` for the per-message hot path (deliveries, acks): ``detail`` as JSON text."""
        if self.retention is not None:
            self._rows.append(
                (
                    at,
                    message_id,
                    queue,
                    tenant,
                    key,
                    correlation_id,
                    event,
                    attempt,
                    worker,
                    self.process,
                    detail,
                )
            )

    def mark(self) -> int:
        """A point to :meth:`rewind` to (a savepoint's events)."""
        return len(self._rows)

    def rewind(self, mark: int) -> None:
        """Forget events recorded since ``mark`` (their savepoint rolled back)."""
        del self._rows[mark:]

    def flush(self, conn: Any) -> None:
        """Insert the collected events inside the transaction about to commit."""
        if self._rows:
            rows, self._rows = self._rows, []
            conn.executemany(
                "INSERT INTO pmsq_journal (at, message_id, queue, tenant, key, correlation_id, "
                "event, attempt, worker, process, detail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    def discard(self) -> None:
        """Forget the events of a transaction that rolled back."""
        self._rows.clear()


def prune(conn: sqlite3.Connection, older_than: float, batch: int | None = None) -> int:
    """Delete events recorded before ``older_than`` among the oldest ``batch``; how many.

    Looking only at the oldest batch (by insertion order) keeps the pass an
    index range scan of bounded size whatever the journal holds. The journal
    is a table of its own: pruning never touches a message.
    """
    cur = conn.execute(
        "DELETE FROM pmsq_journal WHERE seq IN (SELECT seq FROM pmsq_journal ORDER BY seq "
        "LIMIT ?) AND at < ?",
        (PRUNE_BATCH if batch is None else batch, older_than),
    )
    return int(cur.rowcount)


def _event(r: Sequence[Any]) -> HistoryEvent:
    return HistoryEvent(
        at=r[1],
        message_id=r[2],
        queue=r[3],
        tenant=r[4] or None,
        key=r[5],
        correlation_id=r[6],
        event=r[7],
        attempt=r[8],
        worker=r[9],
        process=r[10],
        detail=json.loads(r[11]) if r[11] else {},
    )


_COLUMNS = (
    "seq, at, message_id, queue, tenant, key, correlation_id, event, attempt, worker, "
    "process, detail"
)


def resolve_dedup(conn: sqlite3.Connection, dedup_id: str) -> list[str]:
    """Message ids put with ``dedup_id`` (any queue), newest first."""
    ids = [
        str(r[0])
        for r in conn.execute(
            "SELECT message_id FROM pmsq_dedup WHERE dedup_id = ? ORDER BY expires_at DESC",
            (dedup_id,),
        )
    ]
    if ids:
        return ids
    # Past the dedup window the journal's put events still know it (a scan:
    # an operator's lookup, not a hot path).
    return [
        str(r[0])
        for r in conn.execute(
            f"SELECT DISTINCT message_id FROM pmsq_journal WHERE event = '{Event.PUT}' "
            "AND json_extract(detail, '$.dedup_id') = ? ORDER BY seq DESC",
            (dedup_id,),
        )
    ]


def query(
    conn: sqlite3.Connection,
    *,
    message_id: str | None = None,
    correlation_id: str | None = None,
    key: str | None = None,
    queue: str | None = None,
    tenant: str | None = None,
    limit: int = 1000,
) -> list[HistoryEvent]:
    """The newest ``limit`` events (returned oldest first) matching every filter given.

    ``correlation_id`` and ``key`` select messages by their ``put`` event
    (the only events indexed that way); every event of those messages is
    returned.
    """
    where: list[str] = []
    args: list[Any] = []
    if message_id is not None:
        where.append("message_id = ?")
        args.append(message_id)
    if correlation_id is not None or key is not None:
        # The literal event = 'put' lets SQLite use the partial indexes.
        puts, put_args = [f"event = '{Event.PUT}'"], []
        for column, value in (("key", key), ("queue", queue), ("tenant", tenant)):
            if value is not None:
                puts.append(f"{column} = ?")
                put_args.append(value)
        cond = " AND ".join(puts)
        if correlation_id is None:
            where.append(f"message_id IN (SELECT message_id FROM pmsq_journal WHERE {cond})")
            args.extend(put_args)
        else:
            # The chain's first message (its id is the chain's), then the others.
            where.append(
                f"message_id IN (SELECT message_id FROM pmsq_journal WHERE message_id = ? "
                f"AND correlation_id = ? AND {cond} UNION SELECT message_id FROM pmsq_journal "
                f"WHERE correlation_id = ? AND correlation_id != message_id AND {cond})"
            )
            args.extend([correlation_id, correlation_id, *put_args, correlation_id, *put_args])
    else:
        if queue is not None:
            where.append("queue = ?")
            args.append(queue)
        if tenant is not None:
            where.append("tenant = ?")
            args.append(tenant)
    sql = f"SELECT {_COLUMNS} FROM pmsq_journal"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql = f"SELECT * FROM ({sql} ORDER BY seq DESC LIMIT ?) ORDER BY seq"
    return [_event(r) for r in conn.execute(sql, [*args, limit]).fetchall()]


def history(
    conn: sqlite3.Connection,
    *,
    message_id: str | None,
    dedup_id: str | None,
    correlation_id: str | None,
    key: str | None,
    queue: str | None,
    tenant: str | None,
    limit: int,
) -> list[HistoryEvent]:
    """``Backend.history``: :func:`query` for each message a dedup id ever named."""
    ids = [message_id] if message_id is not None else [None]
    if dedup_id is not None:
        ids = [i for i in resolve_dedup(conn, dedup_id) if message_id in (None, i)]
    events: list[HistoryEvent] = []
    for mid in ids:
        events.extend(
            query(
                conn,
                message_id=mid,
                correlation_id=correlation_id,
                key=key,
                queue=queue,
                tenant=None if tenant is None else tenant or "",
                limit=limit,
            )
        )
    return events
