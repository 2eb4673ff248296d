"""Settling leased messages: ack, retry, dead-letter, release, extend, and key-line moves.

Every function runs inside the caller's write transaction and checks the
lease token in the same statement that changes the row, so a stale token
changes nothing. A ready row (state 0) still carries the token of a lease that
expired without anyone claiming the message since: that holder may settle it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from pmsq.backends.base import Envelope
from pmsq.backends.sqlite.journal import Journal, duration_detail
from pmsq.backends.sqlite.puts import ConfigReader, insert_envelope, record_put
from pmsq.backends.sqlite.rows import tenant_out
from pmsq.backends.sqlite.schema import IN_FLIGHT, READY, SCHEDULED
from pmsq.ids import new_message_id
from pmsq.stats import HISTOGRAM_BOUNDS_MS

__all__ = ["Metrics", "bury", "promote_next", "settle_acks"]

SLOT_SECONDS = 10
TOTAL_SLOT = 0


def promote_next(conn: sqlite3.Connection, queue: str, tenant: str, key: str | None) -> None:
    """Make the first message still in ``key``'s line its head (no-op for unkeyed)."""
    if key is None:
        return
    conn.execute(
        "UPDATE pmsq_messages SET head = 1 WHERE seq = (SELECT seq FROM pmsq_messages "
        "WHERE queue = ? AND tenant = ? AND key = ? AND line = 1 AND key IS NOT NULL "
        "ORDER BY seq LIMIT 1) AND head = 0",
        (queue, tenant, key),
    )


def bury(
    conn: sqlite3.Connection,
    configs: ConfigReader,
    seq: int,
    *,
    now: float,
    reason: str,
    error_type: str | None,
    traceback: str | None,
    journal: Journal,
    duration_ms: float | None = None,
) -> bool:
    """Dead-letter row ``seq`` (already checked to be leased or expired) and fan it to fallback.

    With ``on_key_failure="block"`` the dead letter keeps its key's line (the
    key waits for an operator); otherwise the next message of the key moves up.
    """
    row = conn.execute(
        "SELECT queue, tenant, key, id, payload, format, headers, priority, correlation_id, "
        "topic, error_type, error, attempt FROM pmsq_messages WHERE seq = ?",
        (seq,),
    ).fetchone()
    if row is None:
        return False
    queue, tenant, key = row[0], row[1], row[2]
    cfg = configs.get(conn, queue)
    blocks = cfg.on_key_failure == "block" and key is not None
    conn.execute(
        "UPDATE pmsq_messages SET state = 2, line = ?, head = ?, lease_token = NULL, "
        "lease_expires = NULL, dead_reason = ?, dead_at = ?, "
        "error_type = COALESCE(?, error_type), error = COALESCE(?, error) WHERE seq = ?",
        (int(blocks), int(blocks), reason, now, error_type, traceback, seq),
    )
    if not blocks:
        promote_next(conn, queue, tenant, key)
    fallback_id = new_message_id(now) if cfg.fallback is not None else None
    journal.add(
        now,
        "dead_lettered",
        row[3],
        queue,
        tenant,
        key,
        row[8],
        attempt=row[12],
        reason=reason,
        error_type=error_type,
        error=traceback,
        duration_ms=_ms(duration_ms),
        fallback=fallback_id,
    )
    if cfg.fallback is not None:
        headers: dict[str, Any] = json.loads(row[6]) if row[6] else {}
        headers["pmsq.dead_letter"] = {"queue": queue, "message_id": row[3], "reason": reason}
        copy = Envelope(
            id=str(fallback_id),
            queue=cfg.fallback,
            data=bytes(row[4]),
            format=row[5],
            key=key,
            tenant=tenant_out(tenant),
            priority=row[7],
            available_at=now,
            enqueued_at=now,
            headers=json.dumps(headers, separators=(",", ":")),
            dedup_id=None,
            topic=row[9],
            correlation_id=row[8],
            causation_id=row[3],
        )
        insert_envelope(conn, copy, now)
        record_put(journal, copy, now, dead_letter_of=row[3])
        configs.get(conn, cfg.fallback)  # declare the fallback queue if it is new
    return True


def _ms(duration_ms: float | None) -> float | None:
    return None if duration_ms is None else round(duration_ms, 3)


# Acks per DELETE statement: two parameters each, well under SQLite's limits.
_ACK_CHUNK = 100


def settle_acks(
    conn: sqlite3.Connection,
    items: Sequence[tuple[int, str, float | None]],
    *,
    now: float,
    journal: Journal,
) -> list[tuple[str, str, str | None] | None]:
    """Delete acked messages ``(seq, token, duration_ms)``: one DELETE per 100.

    Returns ``(queue, tenant, key)`` per item, or ``None`` where the lease
    was lost.

    Each row is matched on its own token in the statement that deletes it,
    so a stale receipt among fresh ones (even for the same message) deletes
    nothing and gets ``None``. The next message of an acked message's key
    becomes its head.
    """
    found: dict[tuple[int, str], tuple[Any, ...]] = {}
    for start in range(0, len(items), _ACK_CHUNK):
        chunk = items[start : start + _ACK_CHUNK]
        where = " OR ".join(["(seq = ? AND lease_token = ?)"] * len(chunk))
        params = [v for seq, token, _ in chunk for v in (seq, token)]
        # Only placeholders are formatted into the statement.
        for row in conn.execute(
            f"DELETE FROM pmsq_messages WHERE ({where}) AND state IN (0, 1) "
            "RETURNING seq, lease_token, queue, tenant, key, id, correlation_id, attempt",
            params,
        ):
            found[(row[0], row[1])] = row
    out: list[tuple[str, str, str | None] | None] = []
    for seq, token, ms in items:
        row = found.pop((seq, token), None)
        if row is None:
            out.append(None)
            continue
        _, _, queue, tenant, key, mid, correlation, attempt = row
        promote_next(conn, queue, tenant, key)
        detail = duration_detail(_ms(ms))
        journal.add_row(now, "acked", mid, queue, tenant, key, correlation, attempt, None, detail)
        out.append((queue, tenant, key))
    return out


def settle_retry(
    conn: sqlite3.Connection,
    seq: int,
    token: str,
    *,
    now: float,
    available_at: float,
    error_type: str | None,
    error: str | None,
    journal: Journal,
    duration_ms: float | None = None,
) -> tuple[str, str] | None:
    """Put a leased message back at ``available_at``; it stays its key's head."""
    state = SCHEDULED if available_at > now else READY
    row = conn.execute(
        "UPDATE pmsq_messages SET state = ?, available_at = ?, lease_token = NULL, "
        "lease_expires = NULL, error_type = COALESCE(?, error_type), error = COALESCE(?, error) "
        "WHERE seq = ? AND lease_token = ? AND state IN (0, 1) "
        "RETURNING queue, tenant, key, id, correlation_id, attempt",
        (state, available_at, error_type, error, seq, token),
    ).fetchone()
    if row is None:
        return None
    journal.add(
        now,
        "retried",
        row[3],
        row[0],
        row[1],
        row[2],
        row[4],
        attempt=row[5],
        delay=round(max(0.0, available_at - now), 3),
        error_type=error_type,
        error=error,
        duration_ms=_ms(duration_ms),
    )
    return row[0], row[1]


def settle_release(
    conn: sqlite3.Connection, seq: int, token: str, now: float, journal: Journal
) -> bool:
    """Hand back an unstarted message: undo the attempt its claim counted; False if lost."""
    row = conn.execute(
        "UPDATE pmsq_messages SET state = CASE WHEN available_at > ? THEN 3 ELSE 0 END, "
        "attempt = MAX(attempt - 1, 0), lease_token = NULL, lease_expires = NULL "
        "WHERE seq = ? AND lease_token = ? AND state = 1 "
        "RETURNING queue, tenant, key, id, correlation_id, attempt",
        (now, seq, token),
    ).fetchone()
    if row is None:
        return False
    journal.add(now, "released", row[3], row[0], row[1], row[2], row[4], attempt=row[5] + 1)
    return True


def settle_extend(conn: sqlite3.Connection, seq: int, token: str, expires: float) -> bool:
    """Move a held lease's expiry; False if the lease is lost.

    A lease that expired while nobody else claimed the message is taken again.
    """
    cur = conn.execute(
        "UPDATE pmsq_messages SET state = ?, lease_expires = ? WHERE seq = ? "
        "AND lease_token = ? AND state IN (0, 1)",
        (IN_FLIGHT, expires, seq, token),
    )
    return cur.rowcount == 1


def _bucket(ms: float) -> int:
    for i, bound in enumerate(HISTOGRAM_BOUNDS_MS):
        if ms <= bound:
            return i
    return len(HISTOGRAM_BOUNDS_MS)


class Metrics:
    """Counts outcomes within one transaction and writes them once at its end."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], list[int]] = {}
        self._hist: dict[tuple[str, str], list[int]] = {}

    def __bool__(self) -> bool:
        return bool(self._counts)

    def add(
        self,
        queue: str,
        tenant: str,
        *,
        processed: int = 0,
        failed: int = 0,
        retried: int = 0,
        dead: int = 0,
        duration_ms: float | None = None,
    ) -> None:
        c = self._counts.setdefault((queue, tenant), [0, 0, 0, 0])
        c[0] += processed
        c[1] += failed
        c[2] += retried
        c[3] += dead
        if duration_ms is not None:
            h = self._hist.setdefault((queue, tenant), [0] * (len(HISTOGRAM_BOUNDS_MS) + 1))
            h[_bucket(duration_ms)] += 1

    def flush(self, conn: sqlite3.Connection, now: float) -> None:
        slot = int(now // SLOT_SECONDS)
        for (queue, tenant), c in self._counts.items():
            for s in (TOTAL_SLOT, slot):
                conn.execute(
                    "INSERT INTO pmsq_metrics (queue, tenant, slot, processed, failed, retried, "
                    "dead_lettered) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
                    "processed = processed + excluded.processed, failed = failed + "
                    "excluded.failed, retried = retried + excluded.retried, dead_lettered = "
                    "dead_lettered + excluded.dead_lettered",
                    (queue, tenant, s, *c),
                )
            hist = self._hist.get((queue, tenant))
            if hist:
                row = conn.execute(
                    "SELECT hist FROM pmsq_metrics WHERE queue = ? AND tenant = ? AND slot = ?",
                    (queue, tenant, slot),
                ).fetchone()
                old = json.loads(row[0]) if row and row[0] else []
                merged = [a + (old[i] if i < len(old) else 0) for i, a in enumerate(hist)]
                conn.execute(
                    "UPDATE pmsq_metrics SET hist = ? WHERE queue = ? AND tenant = ? AND slot = ?",
                    (json.dumps(merged), queue, tenant, slot),
                )
        self._counts.clear()
        self._hist.clear()
