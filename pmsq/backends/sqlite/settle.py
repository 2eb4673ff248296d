"""Settling leased messages: ack, retry, dead-letter, release, extend, and key-line moves.

Every function runs inside the caller's write transaction and checks the
lease token in the same statement that changes the row, so a stale token
changes nothing. A ready row (state 0) still carries the token of a lease that
expired without anyone claiming the message since: that holder may settle it.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Sequence
from typing import Any

from pmsq.backends.sqlite import counters, pauses
from pmsq.backends.sqlite.journal import (
    CLAIM_COLUMNS,
    Delivery,
    Event,
    Journal,
    carried,
    duration_detail,
)
from pmsq.backends.sqlite.lines import promote_next
from pmsq.backends.sqlite.puts import ConfigReader, insert_envelope, record_put
from pmsq.backends.sqlkit.deadletter import blocks_key, fallback_copy
from pmsq.backends.sqlkit.metrics import Metrics
from pmsq.backends.sqlkit.settlements import failure_count
from pmsq.backends.sqlkit.settlements import settle_batch as kit_settle_batch
from pmsq.backends.sqlkit.states import DEAD, HELD, IN_FLIGHT, READY, SCHEDULED, waiting_state
from pmsq.backends.types import Settlement
from pmsq.ids import new_message_id

__all__ = [
    "bury",
    "settle_acks",
    "settle_batch",
    "settle_extend",
    "settle_release",
    "settle_retry",
    "settle_snooze",
]


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
    worker: str | None = None,
    delivery: Delivery | None = None,
) -> bool:
    """Dead-letter row ``seq`` (already checked to be leased or expired) and fan it to fallback.

    With ``on_key_failure="block"`` the dead letter of a failure keeps its
    key's line (the key waits for an operator); otherwise (and for an expired
    message, which failed nothing) the next message of the key moves up.
    ``worker`` and ``delivery``: the delivery this dead letter settles, if
    its journal row tells it (see ``journal.carried``).
    """
    row = conn.execute(
        "SELECT queue, tenant, key, id, payload, format, headers, priority, correlation_id, "
        "topic, error_type, error, attempt, state, head FROM pmsq_messages WHERE seq = ?",
        (seq,),
    ).fetchone()
    if row is None:
        return False
    queue, tenant, key = row[0], row[1], row[2]
    cfg = configs.get(conn, queue)
    blocks = blocks_key(cfg, key, error_type)
    conn.execute(
        f"UPDATE pmsq_messages SET state = {DEAD:d}, line = ?, head = ?, lease_token = NULL, "
        "lease_expires = NULL, dead_reason = ?, dead_at = ?, "
        "error_type = COALESCE(?, error_type), error = COALESCE(?, error) WHERE seq = ?",
        (int(blocks), int(blocks), reason, now, error_type, traceback, seq),
    )
    counters.bump(conn, queue, tenant, counters.kind(row[13], row[14]), counters.K_DEAD)
    if not blocks:
        promote_next(conn, queue, tenant, key)
    fallback_id = new_message_id(now) if cfg.fallback is not None else None
    journal.add(
        now,
        Event.DEAD_LETTERED,
        row[3],
        queue,
        tenant,
        key,
        row[8],
        attempt=row[12],
        worker=worker,
        delivery=delivery,
        reason=reason,
        error_type=error_type,
        error=traceback,
        duration_ms=_ms(duration_ms),
        fallback=fallback_id,
    )
    if fallback_id is not None:
        copy = fallback_copy(
            cfg,
            id=fallback_id,
            message_id=row[3],
            reason=reason,
            payload=row[4],
            format=row[5],
            key=key,
            tenant=tenant,
            priority=row[7],
            headers=row[6],
            topic=row[9],
            correlation_id=row[8],
            now=now,
        )
        insert_envelope(conn, copy, now)
        record_put(journal, copy, now, dead_letter_of=row[3])
        configs.get(conn, copy.queue)  # declare the fallback queue if it is new
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
            f"DELETE FROM pmsq_messages WHERE ({where}) AND state IN {HELD} "
            "RETURNING seq, lease_token, queue, tenant, key, id, correlation_id, attempt, "
            f"state, head, {CLAIM_COLUMNS}",
            params,
        ):
            found[(row[0], row[1])] = row
    if found:
        gone = Counter((row[2], row[3], counters.kind(row[8], row[9])) for row in found.values())
        for (queue, tenant, kind), n in gone.items():
            counters.bump(conn, queue, tenant, kind, None, n)
    out: list[tuple[str, str, str | None] | None] = []
    for seq, token, ms in items:
        row = found.pop((seq, token), None)
        if row is None:
            out.append(None)
            continue
        _, _, queue, tenant, key, mid, correlation, attempt, state, _ = row[:10]
        promote_next(conn, queue, tenant, key)
        detail = duration_detail(_ms(ms))
        worker, delivery = carried(state == IN_FLIGHT, row[10:])
        journal.add_row(
            now, Event.ACKED, mid, queue, tenant, key, correlation, attempt, worker, detail,
            delivery,
        )  # fmt: skip
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
) -> tuple[str, str, str | None, str] | None:
    """Put a leased message back at ``available_at``; it stays its key's head.

    Returns ``(queue, tenant, key, id)``, or ``None`` if the lease was lost.
    """
    state = waiting_state(available_at, now)
    old = _held_kind(conn, seq, token)
    if old is None:
        return None
    row = conn.execute(
        "UPDATE pmsq_messages SET state = ?, available_at = ?, lease_token = NULL, "
        "lease_expires = NULL, error_type = COALESCE(?, error_type), error = COALESCE(?, error) "
        f"WHERE seq = ? AND lease_token = ? AND state IN {HELD} "
        f"RETURNING queue, tenant, key, id, correlation_id, attempt, head, {CLAIM_COLUMNS}",
        (state, available_at, error_type, error, seq, token),
    ).fetchone()
    if row is None:
        return None
    counters.bump(conn, row[0], row[1], old, counters.kind(state, row[6]))
    worker, delivery = carried(old == counters.K_IN_FLIGHT, row[7:])
    journal.add(
        now,
        Event.RETRIED,
        row[3],
        row[0],
        row[1],
        row[2],
        row[4],
        attempt=row[5],
        worker=worker,
        delivery=delivery,
        delay=round(max(0.0, available_at - now), 3),
        error_type=error_type,
        error=error,
        duration_ms=_ms(duration_ms),
    )
    return row[0], row[1], row[2], row[3]


def settle_snooze(
    conn: sqlite3.Connection,
    seq: int,
    token: str,
    *,
    now: float,
    available_at: float,
    journal: Journal,
    duration_ms: float | None = None,
) -> bool:
    """Put a leased message back at ``available_at`` without counting its attempt.

    Its claim counted the attempt; undoing that makes the next delivery's
    ``attempt`` this one's again. It stays its key's head. False if lost.
    """
    old = _held_kind(conn, seq, token)
    if old is None:
        return False
    state = waiting_state(available_at, now)
    row = conn.execute(
        "UPDATE pmsq_messages SET state = ?, available_at = ?, attempt = MAX(attempt - 1, 0), "
        "lease_token = NULL, lease_expires = NULL "
        f"WHERE seq = ? AND lease_token = ? AND state IN {HELD} "
        f"RETURNING queue, tenant, key, id, correlation_id, attempt, head, {CLAIM_COLUMNS}",
        (state, available_at, seq, token),
    ).fetchone()
    if row is None:
        return False
    counters.bump(conn, row[0], row[1], old, counters.kind(state, row[6]))
    worker, delivery = carried(old == counters.K_IN_FLIGHT, row[7:])
    journal.add(
        now,
        Event.SNOOZED,
        row[3],
        row[0],
        row[1],
        row[2],
        row[4],
        attempt=row[5] + 1,
        worker=worker,
        delivery=delivery,
        delay=round(max(0.0, available_at - now), 3),
        duration_ms=_ms(duration_ms),
    )
    return True


def settle_release(
    conn: sqlite3.Connection, seq: int, token: str, now: float, journal: Journal
) -> bool:
    """Hand back an unstarted message: undo the attempt its claim counted; False if lost."""
    row = conn.execute(
        "UPDATE pmsq_messages SET "
        f"state = CASE WHEN available_at > ? THEN {SCHEDULED:d} ELSE {READY:d} END, "
        "attempt = MAX(attempt - 1, 0), lease_token = NULL, lease_expires = NULL "
        f"WHERE seq = ? AND lease_token = ? AND state = {IN_FLIGHT:d} "
        f"RETURNING queue, tenant, key, id, correlation_id, attempt, state, head, {CLAIM_COLUMNS}",
        (now, seq, token),
    ).fetchone()
    if row is None:
        return False
    counters.bump(conn, row[0], row[1], counters.K_IN_FLIGHT, counters.kind(row[6], row[7]))
    worker, delivery = carried(True, row[8:])  # only a message in flight is released
    journal.add(
        now,
        Event.RELEASED,
        row[3],
        row[0],
        row[1],
        row[2],
        row[4],
        attempt=row[5] + 1,
        worker=worker,
        delivery=delivery,
    )
    return True


def settle_extend(conn: sqlite3.Connection, seq: int, token: str, expires: float) -> bool:
    """Move a held lease's expiry; False if the lease is lost.

    A lease that expired while nobody else claimed the message is taken again.
    """
    cur = conn.execute(
        "UPDATE pmsq_messages SET lease_expires = ? WHERE seq = ? "
        f"AND lease_token = ? AND state = {IN_FLIGHT:d}",
        (expires, seq, token),
    )
    if cur.rowcount == 1:
        return True
    # Lapsed but not claimed again: it is ready (counted so) until taken back here.
    row = conn.execute(
        f"UPDATE pmsq_messages SET state = {IN_FLIGHT:d}, lease_expires = ? WHERE seq = ? "
        f"AND lease_token = ? AND state = {READY:d} RETURNING queue, tenant, head",
        (expires, seq, token),
    ).fetchone()
    if row is None:
        return False
    counters.bump(conn, row[0], row[1], counters.kind(READY, row[2]), counters.K_IN_FLIGHT)
    return True


def _held_kind(conn: sqlite3.Connection, seq: int, token: str) -> int | None:
    """The counted kind of row ``seq`` if ``token`` still holds it (in flight, or lapsed)."""
    row = conn.execute(
        f"SELECT state, head FROM pmsq_messages WHERE seq = ? AND lease_token = ? "
        f"AND state IN {HELD}",
        (seq, token),
    ).fetchone()
    return None if row is None else counters.kind(row[0], row[1])


def settle_batch(
    conn: sqlite3.Connection,
    settlements: Sequence[Settlement],
    *,
    now: float,
    configs: ConfigReader,
    journal: Journal,
    metrics: Metrics,
    probes: set[str] | None = None,
) -> list[bool]:
    """Settle ``settlements`` in the open transaction; whether each one's lease held.

    Outcomes are counted into ``metrics`` (written later by the backend).
    ``probes``: ids of circuit probes this process claimed (see
    ``claims.claim``); an acked one closes its circuit. Without it every ack
    of a queue with a circuit looks for a probe.
    """

    def acks(batch: list[Settlement]) -> list[bool]:
        rows = settle_acks(
            conn,
            [(s.receipt.handle, s.receipt.token, s.duration_ms) for s in batch],
            now=now,
            journal=journal,
        )
        # One lock for the batch's counts, not one add() per ack.
        acked = [(s, row) for s, row in zip(batch, rows, strict=True) if row is not None]
        metrics.add_processed([(row[0], row[1], s.duration_ms) for s, row in acked])
        for s, row in acked:
            if _maybe_probe(s, row[0]):
                # A half-open circuit's probe closes it by succeeding.
                pauses.close_probe(conn, journal, row[0], s.receipt.message_id, now)
        return [row is not None for row in rows]

    def _maybe_probe(s: Settlement, queue: str) -> bool:
        # The set spares every ack a config read: only probes close circuits.
        if probes is None:
            return configs.get(conn, queue).circuit is not None
        if s.receipt.message_id not in probes:
            return False
        probes.discard(s.receipt.message_id)
        return True

    def one(s: Settlement) -> bool:
        if probes:
            probes.discard(s.receipt.message_id)
        if s.action == "release":
            return settle_release(conn, s.receipt.handle, s.receipt.token, now, journal)
        if s.action == "snooze":
            return settle_snooze(
                conn,
                s.receipt.handle,
                s.receipt.token,
                now=now,
                available_at=s.available_at,
                journal=journal,
                duration_ms=s.duration_ms,
            )
        return _settle_failure(conn, s, now, configs, journal, metrics)

    return kit_settle_batch(settlements, acks=acks, one=one)


def _settle_failure(
    conn: sqlite3.Connection,
    s: Settlement,
    now: float,
    configs: ConfigReader,
    journal: Journal,
    metrics: Metrics,
) -> bool:
    """A retry or a dead letter."""
    r = s.receipt
    failed = failure_count(s)
    if s.action == "retry":
        retried = settle_retry(
            conn,
            r.handle,
            r.token,
            now=now,
            available_at=s.available_at,
            error_type=s.error_type,
            error=s.error,
            journal=journal,
            duration_ms=s.duration_ms,
        )
        if retried is None:
            return False
        metrics.add(retried[0], retried[1], retried=1, failed=failed, duration_ms=s.duration_ms)
        if s.failed:
            _count_failure(conn, configs, journal, s, retried, now)
        return True
    row = conn.execute(
        f"SELECT queue, tenant, key, id, state, {CLAIM_COLUMNS} FROM pmsq_messages "
        f"WHERE seq = ? AND lease_token = ? AND state IN {HELD}",
        (r.handle, r.token),
    ).fetchone()
    if row is None:
        return False
    worker, delivery = carried(row[4] == IN_FLIGHT, row[5:])
    bury(
        conn,
        configs,
        r.handle,
        now=now,
        reason=s.reason,
        error_type=s.error_type,
        traceback=s.error,
        journal=journal,
        duration_ms=s.duration_ms,
        worker=worker,
        delivery=delivery,
    )
    metrics.add(row[0], row[1], dead=1, failed=failed, duration_ms=s.duration_ms)
    if s.failed:
        _count_failure(conn, configs, journal, s, (row[0], row[1], row[2], row[3]), now)
    return True


def _count_failure(
    conn: sqlite3.Connection,
    configs: ConfigReader,
    journal: Journal,
    s: Settlement,
    where: tuple[str, str, str | None, str],
    now: float,
) -> None:
    """A handler's failure counts toward its queue's circuit breaker, if it has one."""
    queue, tenant, key, mid = where
    circuit = configs.get(conn, queue).circuit
    if circuit is not None:
        pauses.circuit_failure(
            conn,
            journal,
            circuit,
            queue=queue,
            tenant=tenant,
            key=key,
            message_id=mid,
            error_type=s.error_type,
            error=s.error,
            now=now,
        )
