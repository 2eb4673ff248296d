"""Operator reads and writes: dead letters (list, redrive, purge), peek and stats."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from pmsq.backends.base import Envelope, StoredDeadLetter
from pmsq.backends.sqlite import counters
from pmsq.backends.sqlite.journal import Journal
from pmsq.backends.sqlite.rows import MESSAGE_COLUMNS, envelope_from_row, tenant_in
from pmsq.backends.sqlite.settle import SLOT_SECONDS, TOTAL_SLOT, promote_next
from pmsq.message import utc_from_epoch
from pmsq.stats import Stats, StatsBuilder

__all__ = ["dead_letters", "peek", "purge", "redrive", "stats"]

_STATE_NAMES = {0: "ready", 1: "in_flight", 2: "dead", 3: "scheduled"}


def _dead_filter(
    queue: str, tenant: str | None, ids: Sequence[str] | None
) -> tuple[str, list[Any]]:
    where = "queue = ? AND state = 2"
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
    return [
        StoredDeadLetter(
            envelope=envelope_from_row(r),
            attempts=r["attempt"],
            reason=r["dead_reason"] or "",
            error_type=r["error_type"],
            traceback=r["error"],
            dead_at=r["dead_at"],
        )
        for r in conn.execute(sql, args).fetchall()
    ]


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
    that waited behind it. Otherwise it rejoins its key at the tail.
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
        journal.add(now, "redriven", mid, queue, tenant_s, key, correlation, attempts=attempts)
        new_seq, head = seq, 1
        if key is not None and not line:
            busy = conn.execute(
                "SELECT 1 FROM pmsq_messages WHERE queue = ? AND tenant = ? AND key = ? "
                "AND line = 1 AND key IS NOT NULL LIMIT 1",
                (queue, tenant_s, key),
            ).fetchone()
            head = 0 if busy else 1
            new_seq = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM pmsq_messages"
            ).fetchone()[0]
        conn.execute(
            "UPDATE pmsq_messages SET seq = ?, state = 0, head = ?, line = 1, attempt = 0, "
            "available_at = ?, dead_reason = NULL, dead_at = NULL, error_type = NULL, "
            "error = NULL WHERE seq = ?",
            (new_seq, head, now, seq),
        )
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
        f"DELETE FROM pmsq_messages WHERE {where} RETURNING tenant, key, line, id, correlation_id",
        args,
    ).fetchall()
    for tenant_s, key, line, mid, correlation in rows:
        journal.add(now, "purged", mid, queue, tenant_s, key, correlation)
        if line:
            promote_next(conn, queue, tenant_s, key)
    return len(rows)


def peek(
    conn: sqlite3.Connection, queue: str, n: int, tenant: str | None
) -> list[tuple[Envelope, int, str]]:
    where, args = "queue = ? AND state != 2", [queue]
    if tenant is not None:
        where += " AND tenant = ?"
        args.append(tenant_in(tenant))
    rows = conn.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM pmsq_messages WHERE {where} "
        "ORDER BY head DESC, priority DESC, seq LIMIT ?",
        [*args, n],
    ).fetchall()
    out = []
    for r in rows:
        state = _STATE_NAMES[r["state"]]
        if r["state"] == 0 and not r["head"]:
            state = "waiting_for_key"
        out.append((envelope_from_row(r), r["attempt"], state))
    return out


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
    # Maintained counts and one index seek per (queue, tenant): no backlog scan.
    counts = counters.read(conn, queue, None if tenant is None else tenant_in(tenant))
    oldest = counters.oldest_waiting(conn, (p for p, c in counts.items() if c[0] or c[1]))
    for (q, t), (ready, delayed, in_flight, dead) in counts.items():
        d = per.figures(q, t)
        d["ready"] += ready
        d["delayed"] += delayed
        d["in_flight"] += in_flight
        d["dead"] += dead
        d["oldest"] = oldest.get((q, t))
    recent = int(now // SLOT_SECONDS) - (60 // SLOT_SECONDS) + 1
    metric_where = "WHERE (slot = 0 OR slot >= ?)" + where.replace("WHERE", " AND", 1)
    for q, t, slot, processed, failed, retried, dead, hist in conn.execute(
        "SELECT queue, tenant, slot, processed, failed, retried, dead_lettered, hist "
        f"FROM pmsq_metrics {metric_where}",
        [recent, *args],
    ):
        d = per.figures(q, t)
        if slot == TOTAL_SLOT:
            d["processed"] += processed
            d["failed"] += failed
            d["retried"] += retried
            d["dead_lettered"] += dead
        else:
            d["processed_per_minute"] += processed
            d["failed_per_minute"] += failed
            d["retried_per_minute"] += retried
            d["dead_lettered_per_minute"] += dead
            if hist:
                per.merge(d, {"hist": json.loads(hist)})
    result = per.queues(now)
    bindings = tuple(
        (p, q) for p, q in conn.execute("SELECT pattern, queue FROM pmsq_bindings ORDER BY 1, 2")
    )
    return Stats(queues=result, bindings=bindings, taken_at=utc_from_epoch(now))
