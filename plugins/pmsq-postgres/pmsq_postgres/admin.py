"""Operator reads and writes: dead letters (list, redrive, purge), peek and stats."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pmsq.backends.base import Envelope, StoredDeadLetter
from pmsq.message import utc_from_epoch
from pmsq.stats import Stats, StatsBuilder
from pmsq_postgres.lines import join_line, leave_lines
from pmsq_postgres.metrics import SLOT_SECONDS, TOTAL_SLOT
from pmsq_postgres.rows import MESSAGE_COLUMNS, envelope_from_row, tenant_in
from pmsq_postgres.tx import Tx

__all__ = ["dead_letters", "peek", "purge", "redrive", "stats"]

_STATE_NAMES = {0: "ready", 1: "in_flight", 2: "dead", 3: "scheduled"}


def _dead_filter(
    queue: str, tenant: str | None, ids: Sequence[str] | None
) -> tuple[str, list[Any]]:
    where = "queue = %s AND state = 2"
    args: list[Any] = [queue]
    if tenant is not None:
        where += " AND tenant = %s"
        args.append(tenant_in(tenant))
    if ids is not None:
        where += " AND id = ANY(%s)"
        args.append(list(ids))
    return where, args


def dead_letters(
    tx: Tx, queue: str, tenant: str | None, ids: Sequence[str] | None, limit: int | None
) -> list[StoredDeadLetter]:
    """Dead letters of ``queue``, oldest first."""
    if ids is not None and not ids:
        return []
    where, args = _dead_filter(queue, tenant, ids)
    sql = f"SELECT {MESSAGE_COLUMNS} FROM {{s}}.messages WHERE {where} ORDER BY dead_at, seq"
    if limit is not None:
        sql += " LIMIT %s"
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
        for r in tx.dicts(sql, args)
    ]


def redrive(tx: Tx, queue: str, ids: Sequence[str] | None, now: float, tenant: str | None) -> int:
    """Return dead letters to their queue, starting again at attempt 1.

    A dead letter that blocks its key (``on_key_failure="block"``) still holds
    its line, so it goes back to the head of the key, before the messages
    that waited behind it. Otherwise it rejoins its key at the tail.
    """
    if ids is not None and not ids:
        return 0
    where, args = _dead_filter(queue, tenant, ids)
    rows = tx.all(
        f"SELECT seq, tenant, key, line FROM {{s}}.messages WHERE {where} ORDER BY seq FOR UPDATE",
        args,
    )
    for seq, tenant_s, key, line in rows:
        if key is not None and not line:
            # It left its line when it died: it rejoins at the tail, and takes a
            # new sequence number, so it is also ordered as a new put elsewhere.
            kpos, head = join_line(tx, queue, tenant_s, key)
            tx.execute(
                "UPDATE {s}.messages SET seq = DEFAULT, state = 0, head = %s, line = true, "
                "kpos = %s, attempt = 0, available_at = %s, dead_reason = NULL, dead_at = NULL, "
                "error_type = NULL, error = NULL WHERE seq = %s",
                (head, kpos, now, seq),
            )
            continue
        # Unkeyed, or still holding its key's line (on_key_failure="block"): it
        # keeps its place, at the head of its key.
        tx.execute(
            "UPDATE {s}.messages SET state = 0, head = true, attempt = 0, available_at = %s, "
            "dead_reason = NULL, dead_at = NULL, error_type = NULL, error = NULL WHERE seq = %s",
            (now, seq),
        )
    if rows:
        tx.notify.add(queue)
    return len(rows)


def purge(tx: Tx, queue: str, ids: Sequence[str] | None, tenant: str | None) -> int:
    """Delete dead letters; a purged key-blocking dead letter releases its key."""
    if ids is not None and not ids:
        return 0
    where, args = _dead_filter(queue, tenant, ids)
    rows = tx.all(f"DELETE FROM {{s}}.messages WHERE {where} RETURNING tenant, key, line", args)
    leave_lines(tx, [(queue, t, k) for t, k, line in rows if line])
    return len(rows)


def peek(tx: Tx, queue: str, n: int, tenant: str | None) -> list[tuple[Envelope, int, str]]:
    """Up to ``n`` waiting or in-flight messages, heads first, without claiming them."""
    where, args = "queue = %s AND state != 2", [queue]
    if tenant is not None:
        where += " AND tenant = %s"
        args.append(tenant_in(tenant))
    rows = tx.dicts(
        f"SELECT {MESSAGE_COLUMNS} FROM {{s}}.messages WHERE {where} "
        "ORDER BY head DESC, priority DESC, seq LIMIT %s",
        [*args, n],
    )
    out = []
    for r in rows:
        state = _STATE_NAMES[r["state"]]
        if r["state"] == 0 and not r["head"]:
            state = "waiting_for_key"
        out.append((envelope_from_row(r), r["attempt"], state))
    return out


def stats(tx: Tx, queue: str | None, now: float, tenant: str | None) -> Stats:
    """A snapshot of one queue or all (the same shape as the SQLite backend's)."""
    names = (
        [queue]
        if queue is not None
        else [r[0] for r in tx.all("SELECT name FROM {s}.queues ORDER BY name")]
    )
    per = StatsBuilder(names)
    conds: list[str] = []
    args: list[Any] = []
    if queue is not None:
        conds.append("queue = %s")
        args.append(queue)
    if tenant is not None:
        conds.append("tenant = %s")
        args.append(tenant_in(tenant))
    where = ("WHERE " + " AND ".join(conds)) if conds else ""
    for q, t, state, head, count, oldest in tx.all(
        "SELECT queue, tenant, state, head, count(*), min(enqueued_at) FROM {s}.messages "
        f"{where} GROUP BY queue, tenant, state, head",
        args,
    ):
        d = per.figures(q, t)
        if state == 0 and head:
            d["ready"] += count
        elif state in (0, 3):
            d["delayed"] += count
        elif state == 1:
            d["in_flight"] += count
        else:
            d["dead"] += count
        if state in (0, 3) and (d["oldest"] is None or oldest < d["oldest"]):
            d["oldest"] = oldest
    recent = int(now // SLOT_SECONDS) - (60 // SLOT_SECONDS) + 1
    metric_where = " AND ".join(["(slot = 0 OR slot >= %s)", *conds])
    for q, t, slot, processed, failed, retried, dead, hist in tx.all(
        "SELECT queue, tenant, slot, processed, failed, retried, dead_lettered, hist "
        f"FROM {{s}}.metrics WHERE {metric_where}",
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
                per.merge(d, {"hist": list(hist)})
    result = per.queues(now)
    bindings = tuple(
        (p, q) for p, q in tx.all("SELECT pattern, queue FROM {s}.bindings ORDER BY 1, 2")
    )
    return Stats(queues=result, bindings=bindings, taken_at=utc_from_epoch(now))
