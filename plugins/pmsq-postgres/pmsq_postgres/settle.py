"""Settling leased messages: ack, retry, dead-letter, release and extend.

Every function runs inside an open transaction and checks the lease token in
the same statement that changes the row, so a stale token changes nothing.
A ready row (state 0) still carries the token of a lease that expired without
anyone claiming the message since: that late holder may still settle it (a
lease is lost only to another holder). A claimer and a late holder meet on the
row lock; whoever comes second sees the other's change.
"""

from __future__ import annotations

from collections.abc import Sequence

from pmsq.backends.sqlkit.deadletter import EXPIRED_TYPE, fallback_copy
from pmsq.backends.sqlkit.settlements import failure_count
from pmsq.backends.sqlkit.settlements import settle_batch as kit_settle_batch
from pmsq.backends.sqlkit.states import DEAD, HELD, IN_FLIGHT, READY, SCHEDULED, waiting_state
from pmsq.backends.types import Receipt, Settlement
from pmsq.ids import new_message_id
from pmsq_postgres import circuit
from pmsq_postgres.lines import DECREMENT_FROM, leave_lines, promote_heads
from pmsq_postgres.puts import ConfigReader, insert_envelopes
from pmsq_postgres.tx import Tx

__all__ = ["ack", "bury", "extend", "release", "retry", "settle_batch", "snooze"]


def ack(tx: Tx, receipts: Sequence[Receipt], durations_ms: Sequence[float | None]) -> list[bool]:
    """Delete acknowledged messages; ``False`` for each receipt whose lease was lost.

    One statement deletes the messages and locks and decrements their keys'
    rows; a second (for keyed messages only) moves the heads up.
    """
    ms = {r.handle: d for r, d in zip(receipts, durations_ms, strict=True)}
    rows = tx.all(
        "WITH gone AS (DELETE FROM {s}.messages AS m "
        "USING unnest(%s::bigint[], %s::text[]) AS r(seq, token) "
        f"WHERE m.seq = r.seq AND m.lease_token = r.token AND m.state IN {HELD} "
        "RETURNING m.seq, m.queue, m.tenant, m.key), "
        "lines AS ("
        + DECREMENT_FROM.replace(
            "{lines}",
            "(SELECT queue, tenant, key, count(*) AS n FROM gone WHERE key IS NOT NULL "
            "GROUP BY 1, 2, 3)",
        )
        + ") SELECT seq, queue, tenant, key, NULL::integer FROM gone "
        "UNION ALL SELECT NULL, queue, tenant, key, live FROM lines",
        ([r.handle for r in receipts], [r.token for r in receipts]),
    )
    done: set[int] = set()
    lines: list[tuple[str, str, str, int]] = []
    for seq, queue, tenant, key, live in rows:
        if seq is None:
            lines.append((queue, tenant, key, live))
        else:
            done.add(seq)
            tx.count(queue, tenant, processed=1, duration_ms=ms.get(seq))
    promote_heads(tx, lines)
    return [r.handle in done for r in receipts]


def retry(
    tx: Tx,
    receipt: Receipt,
    *,
    now: float,
    available_at: float,
    error_type: str | None,
    error: str | None,
    duration_ms: float | None,
) -> tuple[str, str, str | None] | None:
    """Put a leased message back at ``available_at``; it stays its key's head.

    Returns:
        ``(queue, tenant, key)`` of the message, or ``None`` if the lease was lost.
    """
    row = tx.one(
        "UPDATE {s}.messages SET state = %s, available_at = %s, "
        "lease_token = NULL, lease_expires = NULL, error_type = COALESCE(%s, error_type), "
        f"error = COALESCE(%s, error) WHERE seq = %s AND lease_token = %s AND state IN {HELD} "
        "RETURNING queue, tenant, key",
        (
            waiting_state(available_at, now),
            available_at,
            error_type,
            error,
            receipt.handle,
            receipt.token,
        ),
    )
    if row is None:
        return None
    tx.count(row[0], row[1], retried=1, failed=int(error_type is not None), duration_ms=duration_ms)
    tx.notify.add(row[0])
    return row[0], row[1], row[2]


def snooze(tx: Tx, receipt: Receipt, *, now: float, available_at: float) -> bool:
    """Put a leased message back at ``available_at`` without spending its attempt.

    The claim's attempt is undone, so the next delivery has the same
    ``attempt``; the message stays its key's head, so the key waits for it.
    It is neither a failure nor a retry in the metrics.
    """
    row = tx.one(
        "UPDATE {s}.messages SET state = %s, available_at = %s, "
        "attempt = GREATEST(attempt - 1, 0), lease_token = NULL, lease_expires = NULL "
        "WHERE seq = %s AND lease_token = %s "
        f"AND state IN {HELD} RETURNING queue",
        (waiting_state(available_at, now), available_at, receipt.handle, receipt.token),
    )
    if row is None:
        return False
    tx.notify.add(row[0])
    return True


def release(tx: Tx, receipts: Sequence[Receipt], now: float) -> list[bool]:
    """Hand back unstarted messages: undo the attempt their claim counted; False if lost."""
    rows = tx.all(
        "UPDATE {s}.messages AS m SET "
        f"state = CASE WHEN m.available_at > %s THEN {SCHEDULED:d} ELSE {READY:d} END, "
        "attempt = GREATEST(m.attempt - 1, 0), lease_token = NULL, lease_expires = NULL "
        "FROM unnest(%s::bigint[], %s::text[]) AS r(seq, token) "
        f"WHERE m.seq = r.seq AND m.lease_token = r.token AND m.state = {IN_FLIGHT:d} "
        "RETURNING m.queue, m.seq",
        (now, [r.handle for r in receipts], [r.token for r in receipts]),
    )
    tx.notify.update(r[0] for r in rows)
    released = {r[1] for r in rows}
    return [r.handle in released for r in receipts]


def extend(tx: Tx, receipt: Receipt, expires: float) -> bool:
    """Move a held lease's expiry; ``False`` if the lease is lost.

    A lease that expired while nobody else claimed the message is taken again.
    """
    row = tx.one(
        f"UPDATE {{s}}.messages SET state = {IN_FLIGHT:d}, lease_expires = %s WHERE seq = %s "
        f"AND lease_token = %s AND state IN {HELD} RETURNING 1",
        (expires, receipt.handle, receipt.token),
    )
    return row is not None


def bury(
    tx: Tx,
    configs: ConfigReader,
    queue: str,
    seq: int,
    *,
    token: str | None,
    now: float,
    reason: str,
    error_type: str | None,
    traceback: str | None,
) -> tuple[str, str, str | None] | None:
    """Dead-letter row ``seq`` leased with ``token`` (None: any current lease); fan to fallback.

    With ``on_key_failure="block"`` the dead letter of a failure keeps its
    key's line (the key waits for an operator); otherwise (and for an expired
    message) the next message of the key moves up.

    Returns:
        ``(queue, tenant, key)`` of the dead letter, or ``None`` if the lease was lost.
    """
    cfg = configs.get(tx, queue)
    # An expired message failed nothing: it never blocks its key. (Whether
    # the row has a key at all is checked in the statement.)
    block = cfg.on_key_failure == "block" and error_type != EXPIRED_TYPE
    row = tx.one(
        f"UPDATE {{s}}.messages SET state = {DEAD:d}, line = (%s AND key IS NOT NULL), "
        "head = (%s AND key IS NOT NULL), lease_token = NULL, lease_expires = NULL, "
        "dead_reason = %s, dead_at = %s, error_type = COALESCE(%s, error_type), "
        "error = COALESCE(%s, error) "
        f"WHERE seq = %s AND CASE WHEN %s::text IS NULL THEN state = {IN_FLIGHT:d} "
        f"ELSE state IN {HELD} AND lease_token = %s END "
        "RETURNING queue, tenant, key, id, payload, format, headers, priority, "
        "correlation_id, topic",
        (block, block, reason, now, error_type, traceback, seq, token, token),
    )
    if row is None:
        return None
    queue, tenant, key, mid, payload, fmt, headers_text, priority, correlation, topic = row
    if not block:
        leave_lines(tx, [(queue, tenant, key)])
    if cfg.fallback is not None:
        configs.get(tx, cfg.fallback)  # declare the fallback queue if it is new
        copy = fallback_copy(
            cfg,
            id=new_message_id(now),
            message_id=mid,
            reason=reason,
            payload=payload,
            format=fmt,
            key=key,
            tenant=tenant,
            priority=priority,
            headers=headers_text,
            topic=topic,
            correlation_id=correlation,
            now=now,
        )
        insert_envelopes(tx, [copy], now)
    return queue, tenant, key


def settle_batch(
    tx: Tx, configs: ConfigReader, settlements: Sequence[Settlement], now: float
) -> list[bool]:
    """Settle ``settlements`` in the open transaction; whether each one's lease held.

    The acks go in one statement, then retries, snoozes and dead letters one
    by one, then the releases in one statement. Handler failures then count
    toward their queue's circuit breaker, and acked probes close theirs.
    """
    failures: list[tuple[Settlement, str, str | None]] = []

    def one(s: Settlement) -> bool:
        if s.action == "snooze":
            return snooze(tx, s.receipt, now=now, available_at=s.available_at)
        if s.action == "retry":
            where = retry(
                tx,
                s.receipt,
                now=now,
                available_at=s.available_at,
                error_type=s.error_type,
                error=s.error,
                duration_ms=s.duration_ms,
            )
        else:
            where = _bury_settlement(tx, configs, s, now)
        if where is not None and s.failed:
            failures.append((s, where[1], where[2]))
        return where is not None

    done = kit_settle_batch(
        settlements,
        acks=lambda batch: ack(tx, [s.receipt for s in batch], [s.duration_ms for s in batch]),
        one=one,
        releases=lambda batch: release(tx, [s.receipt for s in batch], now),
    )
    _circuits(tx, configs, settlements, done, failures, now)
    return done


def _circuits(
    tx: Tx,
    configs: ConfigReader,
    settlements: Sequence[Settlement],
    done: Sequence[bool],
    failures: Sequence[tuple[Settlement, str, str | None]],
    now: float,
) -> None:
    # Only queues with a breaker pay for it (their config is cached).
    guarded = {
        q
        for q in sorted({s.receipt.queue for s in settlements})
        if configs.recent(tx, q).circuit is not None
    }
    if not guarded:
        return
    circuit.closed_by(
        tx,
        [
            (s.receipt.queue, s.receipt.message_id)
            for s, ok in zip(settlements, done, strict=True)
            if ok and s.action == "ack" and s.receipt.queue in guarded
        ],
    )
    for s, tenant, key in sorted(failures, key=lambda f: (f[0].receipt.queue, f[1], f[2] or "")):
        breaker = configs.recent(tx, s.receipt.queue).circuit
        if breaker is not None:
            circuit.failed(
                tx,
                breaker,
                queue=s.receipt.queue,
                tenant=tenant,
                key=key,
                message_id=s.receipt.message_id,
                error_type=s.error_type,
                error=s.error,
                now=now,
            )


def _bury_settlement(
    tx: Tx, configs: ConfigReader, s: Settlement, now: float
) -> tuple[str, str, str | None] | None:
    done = bury(
        tx,
        configs,
        s.receipt.queue,
        s.receipt.handle,
        token=s.receipt.token,
        now=now,
        reason=s.reason,
        error_type=s.error_type,
        traceback=s.error,
    )
    if done is None:
        return None
    tx.count(done[0], done[1], dead=1, failed=failure_count(s), duration_ms=s.duration_ms)
    return done
