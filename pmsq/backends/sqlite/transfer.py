"""Export and import of stored messages and dedup ids (``pmsq migrate``), inside a transaction.

Export pages through a queue by ``seq``: puts take the write lock, so ``seq``
is put order, and a key's line is ordered by ``seq`` too. Import keeps ids
(an id already stored is skipped, which makes a repeated import harmless)
and appends each keyed message to the tail of its key's line in the order
given.
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Sequence

from pmsq.backends.sqlite import counters
from pmsq.backends.sqlite.lines import head_if_first
from pmsq.backends.sqlite.puts import ConfigReader
from pmsq.backends.sqlite.rows import MESSAGE_COLUMNS
from pmsq.backends.sqlkit.rows import stored_from_row, tenant_in, tenant_out
from pmsq.backends.sqlkit.states import DEAD, waiting_state
from pmsq.backends.types import DedupRecord, StoredMessage

__all__ = ["export_dedup", "export_messages", "import_dedup", "import_messages"]


def export_messages(
    conn: sqlite3.Connection, queue: str, after: str | None, limit: int
) -> tuple[list[StoredMessage], str | None]:
    """One page of ``queue``'s messages in put order, and the next page's cursor."""
    start = int(after) if after else 0
    rows = conn.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM pmsq_messages WHERE queue = ? AND seq > ? "
        "ORDER BY seq LIMIT ?",
        (queue, start, limit),
    ).fetchall()
    out = [stored_from_row(r) for r in rows]
    cursor = str(rows[-1]["seq"]) if len(rows) == limit else None
    return out, cursor


def import_messages(
    conn: sqlite3.Connection, configs: ConfigReader, records: Sequence[StoredMessage], now: float
) -> int:
    """Insert the records whose ids are new, in order; return how many were inserted."""
    if not records:
        return 0
    ids = [r.envelope.id for r in records]
    present: set[str] = set()
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        present.update(
            row[0]
            for row in conn.execute(
                f"SELECT id FROM pmsq_messages WHERE id IN ({','.join('?' * len(chunk))})", chunk
            )
        )
    inserted = 0
    tally = counters.Tally()
    for rec in records:
        env = rec.envelope
        if env.id in present:
            continue
        present.add(env.id)
        configs.get(conn, env.queue)  # declares the queue with defaults if it is new
        tenant = tenant_in(env.tenant)
        dead = rec.state == "dead"
        # A dead letter occupies its key's line only while it blocks the key.
        in_line = (not dead) or (rec.holds_key and env.key is not None)
        head = head_if_first(conn, env.queue, tenant, env.key) if in_line else 1
        if dead:
            state = DEAD
            head = head if in_line else 0
        else:
            state = waiting_state(env.available_at, now)
        conn.execute(
            "INSERT INTO pmsq_messages (id, queue, tenant, key, priority, state, head, line, "
            "available_at, attempt, enqueued_at, format, payload, crc, headers, dedup_id, topic, "
            "correlation_id, causation_id, error_type, error, dead_reason, dead_at) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                env.id,
                env.queue,
                tenant,
                env.key,
                env.priority,
                state,
                head,
                int(in_line),
                env.available_at,
                rec.attempts,
                env.enqueued_at,
                env.format,
                env.data,
                zlib.crc32(env.data),
                env.headers,
                env.dedup_id,
                env.topic,
                env.correlation_id,
                env.causation_id,
                rec.error_type,
                rec.error,
                rec.dead_reason if dead else None,
                rec.dead_at if dead else None,
            ),
        )
        tally.move(env.queue, tenant, None, counters.kind(state, head))
        inserted += 1
    tally.flush(conn)
    return inserted


def export_dedup(conn: sqlite3.Connection, queue: str, now: float) -> list[DedupRecord]:
    """The dedup ids of ``queue`` still remembered at ``now``."""
    rows = conn.execute(
        "SELECT tenant, dedup_id, message_id, expires_at FROM pmsq_dedup "
        "WHERE queue = ? AND (expires_at IS NULL OR expires_at > ?) ORDER BY tenant, dedup_id",
        (queue, now),
    ).fetchall()
    return [DedupRecord(queue, tenant_out(r[0]), r[1], r[2], r[3]) for r in rows]


def import_dedup(conn: sqlite3.Connection, records: Sequence[DedupRecord]) -> int:
    """Remember dedup ids not yet remembered; return how many were new."""
    new = 0
    for r in records:
        cur = conn.execute(
            "INSERT OR IGNORE INTO pmsq_dedup (queue, tenant, dedup_id, message_id, expires_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (r.queue, tenant_in(r.tenant), r.dedup_id, r.message_id, r.expires_at),
        )
        new += cur.rowcount
    return new
