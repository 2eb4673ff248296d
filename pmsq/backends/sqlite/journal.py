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

One row per delivery outcome: a claim writes no row. While a message is
leased, its row in ``pmsq_messages`` holds the delivery's facts (``claimed_at``,
``claimed_by``, ``claimed_process``, ``claimed_after``, and its ``attempt``); the
row that settles the delivery (``acked``, ``retried``, ``dead_lettered``,
``released``, ``snoozed``, ``lease_expired``, ``cancelled``) carries them in
its ``claimed_*`` columns and its ``worker`` column. Reading expands such a row
into the ``delivered`` event and the outcome (:mod:`journal_read`), so
``pmsq trace`` tells the story it told when a claim wrote a row of its own;
a delivery still in flight is read from the message row. ``claimed_after``
(:meth:`Journal.place`) names the last journal row written before the claim
and ranks the deliveries placed after the same row: it puts the
``delivered`` event back where its own row would have been.

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

from pmsq.backends.sqlite.journal_read import RANKS, history, query, resolve_dedup

# Reused: json.dumps with options builds a new encoder on every call.
_ENCODER = json.JSONEncoder(separators=(",", ":"))

__all__ = [
    "CLAIM_COLUMNS",
    "JOURNAL_DDL",
    "Delivery",
    "Event",
    "Journal",
    "carried",
    "history",
    "migrate",
    "prune",
    "query",
    "resolve_dedup",
]

# A delivery an outcome row carries: (claimed_at, claimed_after, claimed_process).
Delivery = tuple[float, int | None, str | None]


# The delivery facts a leased message row keeps, in the order carried() reads them.
CLAIM_COLUMNS = "claimed_at, claimed_after, claimed_by, claimed_process"


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


def migrate(conn: sqlite3.Connection) -> None:
    """Schema version 8: the delivery facts on leased messages and on outcome rows.

    Rows written before stay valid: their ``claimed_at`` is NULL, so they read
    as the single events they are. A message leased at the upgrade has its
    ``delivered`` row already; its NULL ``claimed_at`` keeps it from being told twice.
    """
    for table, columns in (
        ("pmsq_journal", ("claimed_at REAL", "claimed_after INTEGER", "claimed_process TEXT")),
        (
            "pmsq_messages",
            ("claimed_at REAL", "claimed_after INTEGER", "claimed_by TEXT", "claimed_process TEXT"),
        ),
    ):
        # ADD COLUMN has no IF NOT EXISTS; a step must be safe to run again.
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        for column in columns:
            if column.split()[0] not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column}")


def carried(in_flight: bool, facts: Sequence[Any]) -> tuple[str | None, Delivery | None]:
    """``(worker, delivery)`` for the row that settles a message, from its ``CLAIM_COLUMNS``.

    Only a message still in flight carries its delivery: one whose lease ran
    out had it told by its ``lease_expired`` row (which clears ``claimed_at``),
    and a message leased before the upgrade to schema 8 by its own
    ``delivered`` row.
    """
    if not in_flight or facts[0] is None:
        return None, None
    return facts[2], (facts[0], facts[1], facts[3])


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
        # The row the last delivery was placed after, and how many were since.
        self._placed_after, self._rank = -1, 0
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
        delivery: Delivery | None = None,
        **detail: Any,
    ) -> None:
        """Record one event (nothing is written until :meth:`flush`).

        ``error`` in ``detail`` is cut to the last line of its traceback.
        ``delivery`` (with the claimer as ``worker``): the delivery this
        outcome settles, read back as a ``delivered`` event of its own.
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
            delivery,
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
        delivery: Delivery | None = None,
    ) -> None:
        """:meth:`add` for the per-message hot path (acks): ``detail`` as JSON text."""
        if self.retention is None:
            return
        if delivery is None:
            claimed_at = after = process = None
        else:
            claimed_at, after, process = delivery
            # Almost always the settling process: NULL then, a few bytes saved per row.
            if process == self.process:
                process = None
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
                claimed_at,
                after,
                process,
            )
        )

    def mark(self) -> int:
        """A point to :meth:`rewind` to (a savepoint's events)."""
        return len(self._rows)

    def tail(self, conn: sqlite3.Connection) -> int:
        """The ``seq`` of the last journal row written so far, or 0 (for :meth:`place`)."""
        return int(conn.execute("SELECT MAX(seq) FROM pmsq_journal").fetchone()[0] or 0)

    def place(self, tail: int) -> int:
        """Where a delivery happening now sits among the journal's rows (its ``claimed_after``).

        Just after the last row recorded so far: of the rows written
        (``tail``, from :meth:`tail` in this transaction) and those collected
        here, which get the next ``seq`` numbers in order (SQLite numbers a
        new row one past the largest). Deliveries this journal places after
        the same row, in one transaction or several, are ranked in order;
        those of other processes are told apart by their times.
        """
        after = tail + len(self._rows)
        if after != self._placed_after:
            self._placed_after, self._rank = after, 0
        self._rank = min(self._rank + 1, RANKS - 1)
        return after * RANKS + self._rank

    def rewind(self, mark: int) -> None:
        """Forget events recorded since ``mark`` (their savepoint rolled back)."""
        del self._rows[mark:]

    def flush(self, conn: Any) -> None:
        """Insert the collected events inside the transaction about to commit."""
        if self._rows:
            rows, self._rows = self._rows, []
            conn.executemany(
                "INSERT INTO pmsq_journal (at, message_id, queue, tenant, key, correlation_id, "
                "event, attempt, worker, process, detail, claimed_at, claimed_after, "
                "claimed_process) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
