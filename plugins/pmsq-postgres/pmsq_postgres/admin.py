"""Operator reads and writes: dead letters (list, redrive, purge), peek and stats."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pmsq.backends.sqlkit.metrics import TOTAL_SLOT
from pmsq.backends.sqlkit.pauses import with_paused
from pmsq.backends.sqlkit.rows import (
    dead_letter_from_row,
    peek_from_row,
    tenant_in,
)
from pmsq.backends.sqlkit.states import DEAD, READY
from pmsq.backends.sqlkit.stats import (
    add_message_counts,
    add_metric_rows,
    first_recent_slot,
    snapshot,
)
from pmsq.backends.types import Envelope, StoredDeadLetter
from pmsq.stats import Stats, StatsBuilder
from pmsq_postgres.lines import join_line, leave_lines
from pmsq_postgres.pauses import paused_scopes
from pmsq_postgres.puts import COLUMNS
from pmsq_postgres.tx import Tx

__all__ = ["check", "dead_letters", "peek", "purge", "redrive", "stats"]


def _dead_filter(
    queue: str, tenant: str | None, ids: Sequence[str] | None
) -> tuple[str, list[Any]]:
    where = f"queue = %s AND state = {DEAD:d}"
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
    sql = f"SELECT {COLUMNS} FROM {{s}}.messages WHERE {where} ORDER BY dead_at, seq"
    if limit is not None:
        sql += " LIMIT %s"
        args.append(limit)
    return [dead_letter_from_row(r) for r in tx.dicts(sql, args)]


def redrive(tx: Tx, queue: str, ids: Sequence[str] | None, now: float, tenant: str | None) -> int:
    """Return dead letters to their queue, starting again at attempt 1.

    A dead letter that blocks its key (``on_key_failure="block"``) still holds
    its line, so it goes back to the head of the key, before the messages
    that waited behind it. Otherwise it rejoins its key at the tail. Its
    expiry is dropped: an operator who redrives a message wants it delivered.
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
                f"UPDATE {{s}}.messages SET seq = DEFAULT, state = {READY:d}, head = %s, "
                "line = true, kpos = %s, attempt = 0, available_at = %s, dead_reason = NULL, "
                "dead_at = NULL, error_type = NULL, error = NULL, expires_at = NULL WHERE seq = %s",
                (head, kpos, now, seq),
            )
            continue
        # Unkeyed, or still holding its key's line (on_key_failure="block"): it
        # keeps its place, at the head of its key.
        tx.execute(
            f"UPDATE {{s}}.messages SET state = {READY:d}, head = true, attempt = 0, "
            "available_at = %s, dead_reason = NULL, dead_at = NULL, error_type = NULL, "
            "error = NULL, expires_at = NULL WHERE seq = %s",
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
    where, args = f"queue = %s AND state != {DEAD:d}", [queue]
    if tenant is not None:
        where += " AND tenant = %s"
        args.append(tenant_in(tenant))
    rows = tx.dicts(
        f"SELECT {COLUMNS} FROM {{s}}.messages WHERE {where} "
        "ORDER BY head DESC, priority DESC, seq LIMIT %s",
        [*args, n],
    )
    return [peek_from_row(r) for r in rows]


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
    add_message_counts(
        per,
        tx.all(
            "SELECT queue, tenant, state, head, count(*), "
            "min(available_at) FILTER (WHERE available_at <= %s) FROM {s}.messages "
            f"{where} GROUP BY queue, tenant, state, head",
            [now, *args],
        ),
    )
    metric_where = " AND ".join([f"(slot = {TOTAL_SLOT} OR slot >= %s)", *conds])
    add_metric_rows(
        per,
        tx.all(
            "SELECT queue, tenant, slot, processed, failed, retried, dead_lettered, hist, put, "
            "wait_hist "
            f"FROM {{s}}.metrics WHERE {metric_where}",
            [first_recent_slot(now), *args],
        ),
        list,
    )
    stats_now = snapshot(per, tx.all("SELECT pattern, queue FROM {s}.bindings ORDER BY 1, 2"), now)
    return with_paused(stats_now, paused_scopes(tx, now), tenant)


def check(tx: Tx) -> list[str]:
    """Problems with the key-line invariants (empty: healthy)."""
    problems: list[str] = []
    for q, t, k, live, actual in tx.all(
        "SELECT k.queue, k.tenant, k.key, k.live, count(m.seq) FROM {s}.keys k "
        "LEFT JOIN {s}.messages m ON m.queue = k.queue AND m.tenant = k.tenant "
        "AND m.key = k.key AND m.line GROUP BY 1, 2, 3, 4 HAVING k.live != count(m.seq)"
    ):
        problems.append(f"key {k!r} of queue {q!r} tenant {t!r}: live={live}, line has {actual}")
    for q, t, k, heads, first_is_head in tx.all(
        "SELECT queue, tenant, key, count(*) FILTER (WHERE head), "
        "(array_agg(head ORDER BY kpos))[1] FROM {s}.messages WHERE line "
        "GROUP BY 1, 2, 3 HAVING count(*) FILTER (WHERE head) != 1 "
        "OR NOT (array_agg(head ORDER BY kpos))[1]"
    ):
        problems.append(
            f"key {k!r} of queue {q!r} tenant {t!r}: {heads} heads, first in line is "
            f"{'' if first_is_head else 'not '}the head"
        )
    orphans = tx.one(
        "SELECT count(*) FROM {s}.messages m WHERE m.line AND NOT EXISTS (SELECT 1 FROM "
        "{s}.keys k WHERE k.queue = m.queue AND k.tenant = m.tenant AND k.key = m.key)"
    )[0]
    if orphans:
        problems.append(f"{orphans} messages are in a key line that has no keys row")
    return problems
