"""Storing messages: dedup, coalescing, quotas and key lines, inside a caller's transaction."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import zlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

from pmsq.backends.sqlite import counters
from pmsq.backends.sqlite.journal import Event, Journal
from pmsq.backends.sqlite.lines import head_if_first, tail_of
from pmsq.backends.sqlkit.metrics import Metrics
from pmsq.backends.sqlkit.quotas import check_room
from pmsq.backends.sqlkit.rows import tenant_in
from pmsq.backends.sqlkit.states import IN_FLIGHT, READY, SCHEDULED, WAITING, waiting_state
from pmsq.backends.types import Envelope
from pmsq.config import QueueConfig

__all__ = ["ConfigReader", "insert_envelope", "put_batch", "put_one"]


class ConfigReader:
    """Reads queue configs inside the current transaction, creating undeclared queues.

    Decoded configs are cached by their stored text, so a re-declaration by
    another process is seen at once while unchanged configs cost one lookup.
    Within one of the backend's own transactions (:meth:`begin` .. :meth:`end`)
    a queue's config is read once: the write lock keeps it from changing, and
    a put_many of 100 messages then costs one lookup instead of 100.
    """

    def __init__(self) -> None:
        self._decoded: dict[str, QueueConfig] = {}
        self._txn: dict[str, QueueConfig] | None = None
        self._txn_thread = 0

    def begin(self) -> None:
        """A transaction of the backend's own connection began (in this thread)."""
        self._txn = {}
        self._txn_thread = threading.get_ident()

    def end(self) -> None:
        """That transaction ended."""
        self._txn = None

    def get(self, conn: sqlite3.Connection, name: str) -> QueueConfig:
        # Only the thread in the transaction may use its cache: an outbox put
        # runs on the app's connection, outside it.
        txn = self._txn if self._txn_thread == threading.get_ident() else None
        if txn is not None:
            hit = txn.get(name)
            if hit is not None:
                return hit
        row = conn.execute("SELECT config FROM pmsq_queues WHERE name = ?", (name,)).fetchone()
        if row is None:
            # Not cached: a savepoint rolled back later may undo this insert.
            cfg = QueueConfig(name=name)
            conn.execute(
                "INSERT OR IGNORE INTO pmsq_queues (name, config) VALUES (?, ?)",
                (name, _dump(cfg)),
            )
            return cfg
        text = row[0]
        cached = self._decoded.get(text)
        if cached is None:
            cached = QueueConfig.from_dict(json.loads(text))
            if len(self._decoded) > 1000:
                self._decoded.clear()
            self._decoded[text] = cached
        if txn is not None:
            txn[name] = cached
        return cached


def _dump(cfg: QueueConfig) -> str:
    return json.dumps(cfg.to_dict(), sort_keys=True)


def dump_config(cfg: QueueConfig) -> str:
    """Stored text of a queue config."""
    return _dump(cfg)


def _count_waiting(conn: sqlite3.Connection, queue: str, tenant: str | None, cap: int) -> int:
    # Bounded counts: a quota of N never reads more than N index entries.
    if tenant is None:
        waiting = conn.execute(
            "SELECT COUNT(*) FROM (SELECT 1 FROM pmsq_messages "
            f"WHERE queue = ? AND state IN {WAITING} LIMIT ?)",
            (queue, cap),
        ).fetchone()[0]
        flying = conn.execute(
            "SELECT COUNT(*) FROM (SELECT 1 FROM pmsq_messages "
            f"WHERE queue = ? AND state = {IN_FLIGHT:d} LIMIT ?)",
            (queue, cap),
        ).fetchone()[0]
    else:
        waiting = conn.execute(
            "SELECT COUNT(*) FROM (SELECT 1 FROM pmsq_messages "
            f"WHERE queue = ? AND tenant = ? AND state IN {WAITING} LIMIT ?)",
            (queue, tenant, cap),
        ).fetchone()[0]
        flying = conn.execute(
            "SELECT COUNT(*) FROM (SELECT 1 FROM pmsq_messages "
            f"WHERE queue = ? AND state = {IN_FLIGHT:d} AND tenant = ? LIMIT ?)",
            (queue, tenant, cap),
        ).fetchone()[0]
    return int(waiting) + int(flying)


def insert_envelope(
    conn: sqlite3.Connection,
    env: Envelope,
    now: float,
    *,
    attempt: int = 0,
    tally: counters.Tally | None = None,
) -> None:
    """Insert ``env`` at the tail of its key's line (head if the line is empty).

    The message is counted into ``tally`` (written by the caller), or at once without one.
    """
    tenant = tenant_in(env.tenant)
    head = head_if_first(conn, env.queue, tenant, env.key)
    state = waiting_state(env.available_at, now)
    conn.execute(
        "INSERT INTO pmsq_messages (id, queue, tenant, key, priority, state, head, line, "
        "available_at, attempt, enqueued_at, format, payload, crc, headers, dedup_id, topic, "
        "correlation_id, causation_id, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, "
        "?, ?, ?, ?, ?, ?, ?)",
        (
            env.id,
            env.queue,
            tenant,
            env.key,
            env.priority,
            state,
            head,
            env.available_at,
            attempt,
            env.enqueued_at,
            env.format,
            env.data,
            zlib.crc32(env.data),
            env.headers,
            env.dedup_id,
            env.topic,
            env.correlation_id,
            env.causation_id,
            env.expires_at,
        ),
    )
    if tally is None:
        counters.bump(conn, env.queue, tenant, None, counters.kind(state, head))
    else:
        tally.move(env.queue, tenant, None, counters.kind(state, head))


def put_one(
    conn: sqlite3.Connection,
    configs: ConfigReader,
    env: Envelope,
    now: float,
    journal: Journal | None = None,
    siblings: list[str] | None = None,
    stored: Counter[tuple[str, str]] | None = None,
    tally: counters.Tally | None = None,
) -> str:
    """Store one envelope in the open transaction; return the id the caller sees.

    What happened (put, dedup hit, coalesced) is recorded in ``journal``;
    ``siblings`` are the ids of the other copies of a fan-out; a message
    stored is counted in ``stored`` by (queue, stored tenant), and into
    ``tally`` (flushed by the caller) for ``stats()``, at once without one.

    Raises:
        QueueFull: ``max_depth`` or ``tenant_quota`` reached (nothing written).
    """
    cfg = configs.get(conn, env.queue)
    tenant = tenant_in(env.tenant)
    if env.dedup_id is not None:
        row = conn.execute(
            "SELECT message_id, expires_at FROM pmsq_dedup "
            "WHERE queue = ? AND tenant = ? AND dedup_id = ?",
            (env.queue, tenant, env.dedup_id),
        ).fetchone()
        if row is not None and (row[1] is None or row[1] > now):
            if journal is not None:
                # The original's chain is not known here; the event stays out of chains.
                _record(
                    journal,
                    Event.DEDUP_HIT,
                    str(row[0]),
                    env,
                    tenant,
                    None,
                    now,
                    dedup_id=env.dedup_id,
                )
            return str(row[0])
    if env.coalesce and env.key is not None:
        row = tail_of(conn, env.queue, tenant, env.key)
        if row is not None and row[2] in (READY, SCHEDULED) and row[3] == 0:
            # The newest payload brings its own expiry (or none).
            conn.execute(
                "UPDATE pmsq_messages SET payload = ?, format = ?, crc = ?, headers = ?, "
                "expires_at = ? WHERE seq = ?",
                (env.data, env.format, zlib.crc32(env.data), env.headers, env.expires_at, row[0]),
            )
            _remember_dedup(conn, cfg, env, tenant, str(row[1]))
            if journal is not None:
                _record(journal, Event.COALESCED, str(row[1]), env, tenant, row[4], now)
            return str(row[1])
    check_room(cfg, env, lambda tenant, cap: _count_waiting(conn, env.queue, tenant, cap))
    insert_envelope(conn, env, now, tally=tally)
    _remember_dedup(conn, cfg, env, tenant, env.id)
    if stored is not None:
        stored[(env.queue, tenant)] += 1
    if journal is not None:
        record_put(journal, env, now, siblings=siblings)
    return env.id


def put_batch(
    conn: Any,
    configs: ConfigReader,
    log: Journal,
    envelopes: Sequence[Envelope],
    now: float,
    metrics: Metrics | None = None,
) -> list[str]:
    """Store ``envelopes`` in the open transaction; return the ids the caller sees.

    A fan-out (several copies of one topic's message) journals each copy
    with its siblings' ids. Messages stored are counted in ``metrics`` once
    the whole batch is in (``None`` for a transaction pmsq does not commit
    itself: the outbox), so a batch refused by a quota counts nothing.
    """
    stored: Counter[tuple[str, str]] = Counter()
    # The batch's messages are counted for stats() with one UPDATE per (queue, tenant).
    tally = counters.Tally()
    try:
        if not log.enabled:
            ids = [put_one(conn, configs, e, now, stored=stored, tally=tally) for e in envelopes]
        else:
            topics = {e.topic for e in envelopes}
            fanout = len(envelopes) > 1 and len(topics) == 1 and None not in topics
            every = [e.id for e in envelopes]
            ids = [
                put_one(
                    conn,
                    configs,
                    e,
                    now,
                    log,
                    [i for i in every if i != e.id] if fanout else None,
                    stored,
                    tally,
                )
                for e in envelopes
            ]
    except BaseException:
        # A caller that catches (QueueFull in a savepoint) may commit what was
        # stored before: it must be counted. A failing store is failing anyway.
        with contextlib.suppress(sqlite3.Error):
            tally.flush(conn)
        raise
    tally.flush(conn)
    if metrics is not None:
        for (queue, tenant), n in stored.items():
            metrics.add(queue, tenant, put=n)
    return ids


def _record(
    journal: Journal,
    event: str,
    message_id: str,
    env: Envelope,
    tenant: str,
    correlation_id: str | None,
    now: float,
    **d: Any,
) -> None:
    journal.add(now, event, message_id, env.queue, tenant, env.key, correlation_id, **d)


def record_put(
    journal: Journal, env: Envelope, now: float, *, siblings: list[str] | None = None, **d: Any
) -> None:
    """Journal the put of ``env`` (stored as a new message)."""
    tenant = tenant_in(env.tenant)
    if (
        not d
        and not siblings
        and env.topic is None
        and env.causation_id is None
        and env.dedup_id is None
        and env.available_at <= now
    ):
        # Most puts have no detail: the row add() would write, without its
        # keyword and JSON handling (a tenth of put_many's CPU per message).
        journal.add_row(
            now, Event.PUT, env.id, env.queue, tenant, env.key, env.correlation_id, None, None, None
        )
        return
    journal.add(
        now,
        Event.PUT,
        env.id,
        env.queue,
        tenant,
        env.key,
        env.correlation_id,
        topic=env.topic,
        siblings=siblings or None,
        causation_id=env.causation_id,
        dedup_id=env.dedup_id,
        delay=round(env.available_at - now, 3) if env.available_at > now else None,
        **d,
    )


def _remember_dedup(
    conn: sqlite3.Connection, cfg: QueueConfig, env: Envelope, tenant: str, message_id: str
) -> None:
    if env.dedup_id is None:
        return
    expires = None if cfg.dedup_window is None else env.enqueued_at + cfg.dedup_window
    conn.execute(
        "INSERT OR REPLACE INTO pmsq_dedup (queue, tenant, dedup_id, message_id, expires_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (env.queue, tenant, env.dedup_id, message_id, expires),
    )
