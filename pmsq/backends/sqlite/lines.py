"""Key lines in SQLite: joining a key's line, moving its head up, finding its tail.

A keyed message occupies its key's line (``line = 1``) from its put until
it is acked, or dead-lettered without blocking the key; the line's first
message by ``seq`` is its head (``head = 1``), the only one claimable.
Writers hold SQLite's write lock, so ``seq`` order is put order and a line
needs no bookkeeping beyond these two flags.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from pmsq.backends.sqlite import counters

__all__ = ["head_if_first", "promote_next", "rejoin_tail", "tail_of"]


def head_if_first(conn: sqlite3.Connection, queue: str, tenant: str, key: str | None) -> int:
    """``head`` of a message joining ``key``'s line now: 1 if the line is empty (or unkeyed)."""
    if key is None:
        return 1
    busy = conn.execute(
        "SELECT 1 FROM pmsq_messages WHERE queue = ? AND tenant = ? AND key = ? "
        "AND line = 1 AND key IS NOT NULL LIMIT 1",
        (queue, tenant, key),
    ).fetchone()
    return 0 if busy else 1


def rejoin_tail(conn: sqlite3.Connection, queue: str, tenant: str, key: str) -> tuple[int, int]:
    """``(seq, head)`` for a message re-entering ``key``'s line at its tail.

    A new ``seq`` past every stored one puts it behind the messages that
    joined the line while it was out (a redriven dead letter).
    """
    head = head_if_first(conn, queue, tenant, key)
    seq = conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM pmsq_messages").fetchone()[0]
    return int(seq), head


def promote_next(conn: sqlite3.Connection, queue: str, tenant: str, key: str | None) -> None:
    """Make the first message still in ``key``'s line its head (no-op for unkeyed)."""
    if key is None:
        return
    row = conn.execute(
        "UPDATE pmsq_messages SET head = 1 WHERE seq = (SELECT seq FROM pmsq_messages "
        "WHERE queue = ? AND tenant = ? AND key = ? AND line = 1 AND key IS NOT NULL "
        "ORDER BY seq LIMIT 1) AND head = 0 RETURNING state",
        (queue, tenant, key),
    ).fetchone()
    if row is not None:
        # A ready message waiting behind its key was counted as delayed.
        counters.bump(conn, queue, tenant, counters.kind(row[0], 0), counters.kind(row[0], 1))


def tail_of(conn: sqlite3.Connection, queue: str, tenant: str, key: str) -> Any:
    """The last message in ``key``'s line: ``(seq, id, state, attempt, correlation_id)`` or None."""
    return conn.execute(
        "SELECT seq, id, state, attempt, correlation_id FROM pmsq_messages "
        "WHERE queue = ? AND tenant = ? AND key = ? AND line = 1 AND key IS NOT NULL "
        "ORDER BY seq DESC LIMIT 1",
        (queue, tenant, key),
    ).fetchone()
