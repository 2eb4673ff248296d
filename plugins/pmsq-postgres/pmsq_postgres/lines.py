"""Key lines: joining a key's line at its tail, leaving it, and moving its head up.

Every change to a line locks the key's row in ``keys`` first and reads the
messages in a later statement; see ``pmsq_postgres.schema`` for why that
order keeps per-key FIFO under concurrent producers and consumers.
"""

from __future__ import annotations

from collections.abc import Iterable

from pmsq_postgres.tx import Tx

__all__ = ["DECREMENT_FROM", "JOIN_KEY_CTE", "join_line", "leave_lines", "promote_heads"]

# Locks (or creates) the key's row and hands out the next position: ``tail``
# is the new message's position, ``live = 1`` means it is the line's head.
JOIN_KEY_CTE = (
    "WITH k AS (INSERT INTO {s}.keys AS k (queue, tenant, key, tail, live) "
    "VALUES (%(queue)s, %(tenant)s, %(key)s, 1, 1) "
    "ON CONFLICT (queue, tenant, key) DO UPDATE SET tail = k.tail + 1, live = k.live + 1 "
    "RETURNING tail, live) "
)


def join_line(tx: Tx, queue: str, tenant: str, key: str) -> tuple[int, bool]:
    """Add one message to the tail of ``key``'s line; return ``(position, is_head)``."""
    row = tx.one(
        JOIN_KEY_CTE + "SELECT tail, live FROM k",
        {"queue": queue, "tenant": tenant, "key": key},
    )
    return int(row[0]), int(row[1]) == 1


# Decrements ``live`` of the lines in ``d(queue, tenant, key, n)`` (n messages
# left each) and returns the lines' new counts. Used as a CTE by the ack.
DECREMENT_FROM = (
    "UPDATE {s}.keys AS k SET live = GREATEST(k.live - d.n, 0) FROM {lines} AS d "
    "WHERE k.queue = d.queue AND k.tenant = d.tenant AND k.key = d.key "
    "RETURNING k.queue, k.tenant, k.key, k.live"
)


def leave_lines(tx: Tx, lines: Iterable[tuple[str, str, str | None]]) -> None:
    """One message left each ``(queue, tenant, key)`` line: move each line's head up.

    Unkeyed entries are ignored. (Two transactions leaving overlapping sets
    of keys may deadlock on the key rows; PostgreSQL aborts one and the
    backend runs it again.)
    """
    keyed = sorted((q, t, k) for q, t, k in lines if k is not None)
    if not keyed:
        return
    # Statement 1 locks the key rows (waiting for producers that hold them) ...
    rows = tx.all(
        DECREMENT_FROM.replace(
            "{lines}",
            "(SELECT queue, tenant, key, count(*) AS n FROM unnest(%s::text[], %s::text[], "
            "%s::text[]) AS u(queue, tenant, key) GROUP BY 1, 2, 3)",
        ),
        ([q for q, _, _ in keyed], [t for _, t, _ in keyed], [k for _, _, k in keyed]),
    )
    promote_heads(tx, rows)


def promote_heads(tx: Tx, lines: Iterable[tuple[str, str, str, int]]) -> None:
    """Mark the first message of each ``(queue, tenant, key, live)`` line with ``live > 0`` head.

    Must run as its own statement *after* the one that locked the key rows:
    its fresh snapshot then includes every message that producers holding
    those rows before committed.
    """
    busy = sorted((q, t, k) for q, t, k, live in lines if live > 0)
    if not busy:
        return
    promoted = tx.all(
        "UPDATE {s}.messages SET head = true WHERE seq IN ("
        "SELECT (SELECT m.seq FROM {s}.messages m WHERE m.queue = d.queue AND m.tenant = d.tenant "
        "AND m.key = d.key AND m.line ORDER BY m.kpos LIMIT 1) "
        "FROM unnest(%s::text[], %s::text[], %s::text[]) AS d(queue, tenant, key)) "
        "AND NOT head RETURNING queue",
        ([q for q, _, _ in busy], [t for _, t, _ in busy], [k for _, _, k in busy]),
    )
    tx.notify.update(r[0] for r in promoted)
