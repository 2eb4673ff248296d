"""Operator reads and writes: dead letters (list, redrive, purge), peek and stats."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from pmsq.backends.sqlite import counters, pauses
from pmsq.backends.sqlite.journal import Event, Journal
from pmsq.backends.sqlite.lines import promote_next, rejoin_tail
from pmsq.backends.sqlkit.metrics import TOTAL_SLOT
from pmsq.backends.sqlkit.pauses import with_paused
from pmsq.backends.sqlkit.rows import (
    MESSAGE_COLUMNS,
    dead_letter_from_row,
    peek_from_row,
    tenant_in,
)
from pmsq.backends.sqlkit.states import DEAD, READY
from pmsq.backends.sqlkit.stats import (
    add_metric_rows,
    first_recent_slot,
    snapshot,
)
from pmsq.backends.types import Envelope, StoredDeadLetter
from pmsq.stats import Stats, StatsBuilder

__all__ = ["check", "dead_letters", "peek", "purge", "redrive", "stats"]


def _dead_filter(
    queue: str, tenant: str | None, ids: Sequence[str] | None
) -> tuple[str, list[Any]]:
    where = f"queue = ? AND state = {DEAD:d}"
    args: list[Any] = [queue]
    if tenant is not None:
        where += " AND tenant = ?"
        args.append(tenant_in(tenant))
    if ids is not None:
        where += f" AND id IN ({','.join('?' * len(ids))})"
        args.extend(ids)
    return where, args


def dead_letters(
    conn: sqlite3.Connection,
    queue: str,
    tenant: str | None,
    ids: Sequence[str] | None,
    limit: int | None,
) -> list[StoredDeadLetter]:
    if ids is not None and not ids:
        return []
    where, args = _dead_filter(queue, tenant, ids)
    sql = f"SELECT {MESSAGE_COLUMNS} FROM pmsq_messages WHERE {where} ORDER BY dead_at, seq"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    return [dead_letter_from_row(r) for r in conn.execute(sql, args).fetchall()]


def redrive(
    conn: sqlite3.Connection,
    queue: str,
    ids: Sequence[str] | None,
    now: float,
    tenant: str | None,
    journal: Journal,
) -> int:
    """Return dead letters to their queue, starting again at attempt 1.

    A dead letter that blocks its key (``on_key_failure="block"``) still holds
    its line, so it goes back to the head of the key, before the messages
    that waited behind it. Otherwise it rejoins its key at the tail. Its
    expiry is dropped: an operator who redrives a message wants it delivered.
    """
    if ids is not None and not ids:
        return 0
    where, args = _dead_filter(queue, tenant, ids)
    rows = conn.execute(
        f"SELECT seq, tenant, key, line, id, correlation_id, attempt FROM pmsq_messages "
        f"WHERE {where} ORDER BY seq",
        args,
    ).fetchall()
    for seq, tenant_s, key, line, mid, correlation, attempts in rows:
        journal.add(now, Event.REDRIVEN, mid, queue, tenant_s, key, correlation, attempts=attempts)
        new_seq, head = seq, 1
        if key is not None and not line:
            # It left its line when it died: it rejoins at the tail.
            new_seq, head = rejoin_tail(conn, queue, tenant_s, key)
        conn.execute(
            f"UPDATE pmsq_messages SET seq = ?, state = {READY:d}, head = ?, line = 1, "
            "attempt = 0, available_at = ?, dead_reason = NULL, dead_at = NULL, "
            "error_type = NULL, error = NULL, expires_at = NULL WHERE seq = ?",
            (new_seq, head, now, seq),
        )
        counters.bump(conn, queue, tenant_s, counters.K_DEAD, counters.kind(READY, head))
    return len(rows)


def purge(
    conn: sqlite3.Connection,
    queue: str,
    ids: Sequence[str] | None,
    tenant: str | None,
    *,
    now: float,
    journal: Journal,
) -> int:
    """Delete dead letters; a purged key-blocking dead letter releases its key."""
    if ids is not None and not ids:
        return 0
    where, args = _dead_filter(queue, tenant, ids)
    rows = conn.execute(
        f"DELETE FROM pmsq_messages WHERE {where} "
        "RETURNING tenant, key, line, id, correlation_id, state, head",
        args,
    ).fetchall()
    tally = counters.Tally()
    for row in rows:
        tally.move(queue, row[0], counters.kind(row[5], row[6]), None)
    tally.flush(conn)
    for tenant_s, key, line, mid, correlation, _, _ in rows:
        journal.add(now, Event.PURGED, mid, queue, tenant_s, key, correlation)
        if line:
            promote_next(conn, queue, tenant_s, key)
    return len(rows)


def peek(
    conn: sqlite3.Connection, queue: str, n: int, tenant: str | None
) -> list[tuple[Envelope, int, str]]:
    where, args = f"queue = ? AND state != {DEAD:d}", [queue]
    if tenant is not None:
        where += " AND tenant = ?"
        args.append(tenant_in(tenant))
    rows = conn.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM pmsq_messages WHERE {where} "
        "ORDER BY head DESC, priority DESC, seq LIMIT ?",
        [*args, n],
    ).fetchall()
    return [peek_from_row(r) for r in rows]


def stats(conn: sqlite3.Connection, queue: str | None, now: float, tenant: str | None) -> Stats:
    names = (
        [queue]
        if queue is not None
        else [r[0] for r in conn.execute("SELECT name FROM pmsq_queues ORDER BY name")]
    )
    per = StatsBuilder(names)
    where, args = "", []
    if queue is not None:
        where, args = "WHERE queue = ?", [queue]
    if tenant is not None:
        where += (" AND " if where else "WHERE ") + "tenant = ?"
        args.append(tenant_in(tenant))
    # Maintained counts and one index seek per (queue, tenant): no backlog scan
    # (pmsq.backends.sqlite.counters).
    counts = counters.read(conn, queue, None if tenant is None else tenant_in(tenant))
    oldest = counters.oldest_due(conn, (p for p, c in counts.items() if c[0] or c[1]), now)
    for (q, t), (ready, delayed, in_flight, dead) in counts.items():
        d = per.figures(q, t)
        d["ready"] += ready
        d["delayed"] += delayed
        d["in_flight"] += in_flight
        d["dead"] += dead
        d["oldest"] = oldest.get((q, t))
    metric_where = f"WHERE (slot = {TOTAL_SLOT} OR slot >= ?)" + where.replace("WHERE", " AND", 1)
    add_metric_rows(
        per,
        conn.execute(
            "SELECT queue, tenant, slot, processed, failed, retried, dead_lettered, hist, put, "
            "wait_hist "
            f"FROM pmsq_metrics {metric_where}",
            [first_recent_slot(now), *args],
        ),
        json.loads,
    )
    snap = snapshot(
        per, conn.execute("SELECT pattern, queue FROM pmsq_bindings ORDER BY 1, 2"), now
    )
    return with_paused(snap, pauses.paused_scopes(conn, now), tenant)


def check(conn: sqlite3.Connection) -> list[str]:
    """Problems ``PRAGMA quick_check`` finds in the file (empty: healthy)."""
    rows = conn.execute("PRAGMA quick_check").fetchall()
    return [str(r[0]) for r in rows if str(r[0]) != "ok"]
