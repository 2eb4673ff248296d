"""Claiming: due messages become ready, expired leases count as attempts, then
the heads of key lines are leased in priority order, rotating over tenants.

Claims take the write lock first (BEGIN IMMEDIATE, by the caller), so two
consumers never lease the same message or two messages of the same key.
"""

from __future__ import annotations

import secrets
import sqlite3
import zlib
from typing import Any

from pmsq.backends.base import Claimed, Receipt
from pmsq.backends.sqlite.journal import Journal
from pmsq.backends.sqlite.puts import ConfigReader
from pmsq.backends.sqlite.rows import MESSAGE_COLUMNS, envelope_from_row, tenant_in, tenant_out
from pmsq.backends.sqlite.settle import Metrics, bury
from pmsq.config import QueueConfig, RateLimit

__all__ = ["claim", "has_ready", "next_due"]

# How many tenants one claim considers after the rotation cursor. Bounds
# claim cost when thousands of tenants have work; rotation reaches the rest
# on later claims.
_TENANT_WINDOW = 32


def _promote_due(conn: sqlite3.Connection, queue: str, now: float) -> None:
    conn.execute(
        "UPDATE pmsq_messages SET state = 0 WHERE queue = ? AND state = 3 AND available_at <= ?",
        (queue, now),
    )


def _expire_leases(
    conn: sqlite3.Connection,
    configs: ConfigReader,
    cfg: QueueConfig,
    queue: str,
    now: float,
    metrics: Metrics,
    journal: Journal,
) -> None:
    # A lease that ran out counts as a failed attempt: a worker that was killed
    # or hung. Past max_attempts the message is dead even though no handler
    # ever returned (poison messages that crash their worker).
    expired = conn.execute(
        "SELECT seq, attempt, tenant, id, key, correlation_id, lease_expires FROM pmsq_messages "
        "WHERE queue = ? AND state = 1 AND lease_expires <= ?",
        (queue, now),
    ).fetchall()
    for seq, attempt, tenant, mid, key, correlation, lease_expires in expired:
        metrics.add(queue, tenant, failed=1)
        journal.add(
            now,
            "lease_expired",
            mid,
            queue,
            tenant,
            key,
            correlation,
            attempt=attempt,
            expired_at=lease_expires,
        )
        if attempt >= cfg.max_attempts:
            bury(
                conn,
                configs,
                seq,
                now=now,
                reason=f"lease expired on attempt {attempt} of {cfg.max_attempts}",
                error_type="pmsq.LeaseExpired",
                traceback=None,
                journal=journal,
            )
            metrics.add(queue, tenant, dead=1)
        else:
            # The token stays: until someone else claims the message, its late
            # holder may still settle it (a lease is lost only to another holder).
            conn.execute(
                "UPDATE pmsq_messages SET state = 0, lease_expires = NULL, "
                "error_type = 'pmsq.LeaseExpired', error = ? WHERE seq = ?",
                (f"lease expired on attempt {attempt}", seq),
            )
            metrics.add(queue, tenant, retried=1)


def _tenants(conn: sqlite3.Connection, queue: str, after: str | None) -> list[str]:
    """Tenants with ready heads, in rotation order starting after ``after``.

    A loose index scan: one index seek per tenant, whatever the backlog.
    """
    found: list[str] = []
    sql = (
        "SELECT MIN(tenant) FROM pmsq_messages WHERE queue = ? AND tenant > ? "
        "AND state = 0 AND head = 1"
    )
    start = after if after is not None else ""
    # First the tenants after the cursor, then wrap around from the start.
    for lower, inclusive in ((start, False), ("", True)):
        cur: str | None = lower
        if inclusive:
            row = conn.execute(
                "SELECT MIN(tenant) FROM pmsq_messages WHERE queue = ? AND tenant >= ? "
                "AND state = 0 AND head = 1",
                (queue, lower),
            ).fetchone()
            cur = row[0]
            if cur is not None and cur not in found:
                found.append(cur)
        while cur is not None and len(found) < _TENANT_WINDOW:
            row = conn.execute(sql, (queue, cur)).fetchone()
            cur = row[0]
            if cur is None or cur in found:
                break
            found.append(cur)
        if len(found) >= _TENANT_WINDOW:
            break
    return found


def _heads(conn: sqlite3.Connection, queue: str, tenant: str, limit: int) -> list[Any]:
    return conn.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM pmsq_messages INDEXED BY pmsq_ix_ready "
        "WHERE queue = ? AND tenant = ? AND state = 0 AND head = 1 "
        "ORDER BY priority DESC, seq LIMIT ?",
        (queue, tenant, limit),
    ).fetchall()


class _RateBudget:
    """Sliding-window log: at most ``limit`` claims in any ``per`` seconds, per scope."""

    def __init__(self, conn: sqlite3.Connection, queue: str, rate: RateLimit, now: float):
        self.conn, self.queue, self.rate, self.now = conn, queue, rate, now
        self.left: dict[str, int] = {}

    def scope_of(self, row: Any) -> str:
        if self.rate.scope == "tenant":
            return str(row["tenant"])
        if self.rate.scope == "key":
            # Keys are scoped per tenant: property:1 of two tenants are two keys.
            return f"{row['tenant']}\x1f{row['key'] or ''}"
        return ""

    def take(self, scope: str) -> bool:
        if scope not in self.left:
            horizon = self.now - self.rate.per
            self.conn.execute(
                "DELETE FROM pmsq_rate WHERE queue = ? AND scope = ? AND ts <= ?",
                (self.queue, scope, horizon),
            )
            used = self.conn.execute(
                "SELECT COUNT(*) FROM pmsq_rate WHERE queue = ? AND scope = ?",
                (self.queue, scope),
            ).fetchone()[0]
            self.left[scope] = self.rate.limit - int(used)
        if self.left[scope] <= 0:
            return False
        self.left[scope] -= 1
        self.conn.execute(
            "INSERT INTO pmsq_rate (queue, scope, ts) VALUES (?, ?, ?)",
            (self.queue, scope, self.now),
        )
        return True


def _select(
    conn: sqlite3.Connection,
    cfg: QueueConfig,
    queue: str,
    n: int,
    tenant: str | None,
    now: float,
) -> list[Any]:
    rate = _RateBudget(conn, queue, cfg.rate_limit, now) if cfg.rate_limit else None
    # Rate-limited scopes may reject heads, so look a little further ahead.
    fetch = n if rate is None else n * 4
    if tenant is not None:
        order = [tenant_in(tenant)]
        cursor_row = None
    else:
        lo, hi = conn.execute(
            "SELECT (SELECT MIN(tenant) FROM pmsq_messages WHERE queue = ?1 AND state = 0 "
            "AND head = 1), (SELECT MAX(tenant) FROM pmsq_messages WHERE queue = ?1 "
            "AND state = 0 AND head = 1)",
            (queue,),
        ).fetchone()
        if lo is None:
            return []
        if lo == hi:  # one tenant: nothing to rotate over
            order = [lo]
        else:
            cursor_row = conn.execute(
                "SELECT rr_tenant FROM pmsq_queues WHERE name = ?", (queue,)
            ).fetchone()
            order = _tenants(conn, queue, cursor_row[0] if cursor_row else None)
    fronts: list[list[Any]] = [_heads(conn, queue, t, fetch) for t in order]
    picked: list[Any] = []
    pos = 0
    last_tenant: str | None = None
    while len(picked) < n:
        # Highest priority first; among equals, the next tenant in rotation.
        best = None
        best_i = -1
        for step in range(len(order)):
            i = (pos + step) % len(order)
            if fronts[i] and (best is None or fronts[i][0]["priority"] > best):
                best, best_i = fronts[i][0]["priority"], i
        if best_i < 0:
            break
        row = fronts[best_i].pop(0)
        if rate is not None and not rate.take(rate.scope_of(row)):
            if rate.rate.scope != "key":
                fronts[best_i] = []  # the whole tenant (or queue) is out of budget
            continue
        picked.append(row)
        last_tenant = order[best_i]
        pos = (best_i + 1) % len(order)
    if len(order) > 1 and last_tenant is not None:
        conn.execute("UPDATE pmsq_queues SET rr_tenant = ? WHERE name = ?", (last_tenant, queue))
    return picked


def claim(
    conn: sqlite3.Connection,
    configs: ConfigReader,
    queue: str,
    n: int,
    *,
    now: float,
    tenant: str | None,
    metrics: Metrics,
    journal: Journal,
    consumer: str | None = None,
) -> list[Claimed]:
    """Lease up to ``n`` messages of ``queue`` (inside the caller's write transaction).

    Outcomes of expired leases are counted into ``metrics``; deliveries and
    expiries are recorded in ``journal`` (``consumer``: who claimed).
    """
    cfg = configs.get(conn, queue)
    # One indexed look at both clocks instead of an UPDATE and a SELECT that
    # almost always find nothing.
    scheduled, leased = _due(conn, queue)
    if scheduled is not None and scheduled <= now:
        _promote_due(conn, queue, now)
    if leased is not None and leased <= now:
        _expire_leases(conn, configs, cfg, queue, now, metrics, journal)
    out: list[Claimed] = []
    leases: list[tuple[str, float, int]] = []
    expires = now + cfg.lease
    rows = _select(conn, cfg, queue, n, tenant, now)
    while rows:
        row = rows.pop(0)
        if zlib.crc32(row["payload"]) != row["crc"]:
            # A damaged body must not block the queue: dead-letter it, keep going,
            # and look again: burying it may have made the next of its key the head.
            bury(
                conn,
                configs,
                row["seq"],
                now=now,
                reason="payload checksum mismatch: the stored bytes are damaged",
                error_type="pmsq.CorruptPayload",
                traceback=None,
                journal=journal,
            )
            metrics.add(queue, row["tenant"], dead=1)
            if not rows:
                _lease(conn, leases)  # so the new selection skips what is taken
                leases = []
                rows = _select(conn, cfg, queue, n - len(out), tenant, now)
            continue
        token = secrets.token_hex(8)
        leases.append((token, expires, row["seq"]))
        journal.add_row(
            now,
            "delivered",
            row["id"],
            queue,
            row["tenant"],
            row["key"],
            row["correlation_id"],
            row["attempt"] + 1,
            consumer,
            None,
        )
        out.append(
            Claimed(
                receipt=Receipt(
                    queue=queue,
                    message_id=row["id"],
                    token=token,
                    handle=row["seq"],
                    tenant=tenant_out(row["tenant"]),
                ),
                envelope=envelope_from_row(row),
                attempt=row["attempt"] + 1,
                lease_expires=expires,
            )
        )
    _lease(conn, leases)
    return out


def _lease(conn: sqlite3.Connection, leases: list[tuple[str, float, int]]) -> None:
    # One statement for a batch: the rows were selected together as ready key
    # heads, so marking them leased can wait until the batch is picked.
    if leases:
        conn.executemany(
            "UPDATE pmsq_messages SET state = 1, attempt = attempt + 1, lease_token = ?, "
            "lease_expires = ? WHERE seq = ?",
            leases,
        )


def has_ready(conn: sqlite3.Connection, queue: str, now: float, tenant: str | None) -> bool:
    """Lock-free probe: is anything ready, due, or holding an expired lease?"""
    if tenant is None:
        ready = conn.execute(
            "SELECT 1 FROM pmsq_messages WHERE queue = ? AND state = 0 AND head = 1 LIMIT 1",
            (queue,),
        ).fetchone()
    else:
        ready = conn.execute(
            "SELECT 1 FROM pmsq_messages WHERE queue = ? AND tenant = ? AND state = 0 "
            "AND head = 1 LIMIT 1",
            (queue, tenant_in(tenant)),
        ).fetchone()
    if ready:
        return True
    due = next_due(conn, queue, now)
    return due is not None and due <= now


def next_due(conn: sqlite3.Connection, queue: str, now: float) -> float | None:
    """Earliest delayed message or lease expiry in ``queue``."""
    values = [v for v in _due(conn, queue) if v is not None]
    return min(values) if values else None


def _due(conn: sqlite3.Connection, queue: str) -> tuple[float | None, float | None]:
    """``(earliest delayed message, earliest lease expiry)`` in ``queue``."""
    row = conn.execute(
        "SELECT (SELECT MIN(available_at) FROM pmsq_messages WHERE queue = ? AND state = 3), "
        "(SELECT MIN(lease_expires) FROM pmsq_messages WHERE queue = ? AND state = 1)",
        (queue, queue),
    ).fetchone()
    return row[0], row[1]
