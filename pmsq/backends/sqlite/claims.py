"""Claiming: due messages become ready, expired leases count as attempts, then
the heads of key lines are leased in priority order, rotating over tenants.

Claims take the write lock first (BEGIN IMMEDIATE, by the caller), so two
consumers never lease the same message or two messages of the same key.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
import zlib
from collections import Counter
from collections.abc import Callable
from typing import Any

from pmsq.backends.sqlite import counters, pauses
from pmsq.backends.sqlite.group_commit import GroupCommit
from pmsq.backends.sqlite.journal import CLAIM_COLUMNS, Event, Journal, carried
from pmsq.backends.sqlite.puts import ConfigReader
from pmsq.backends.sqlite.rows import MESSAGE_COLUMNS
from pmsq.backends.sqlite.settle import bury
from pmsq.backends.sqlite.store import Store, after_wait
from pmsq.backends.sqlkit.deadletter import (
    CORRUPT_PAYLOAD,
    CORRUPT_REASON,
    EXPIRED_REASON,
    EXPIRED_TYPE,
    LEASE_EXPIRED,
    expired_error,
    expired_reason,
)
from pmsq.backends.sqlkit.metrics import Metrics
from pmsq.backends.sqlkit.pauses import Holds
from pmsq.backends.sqlkit.rotation import RateBudget, pick, rotation_order
from pmsq.backends.sqlkit.rows import claimed_from_row, tenant_in
from pmsq.backends.sqlkit.states import IN_FLIGHT, READY, SCHEDULED
from pmsq.backends.types import Claimed
from pmsq.config import QueueConfig, RateLimit

__all__ = ["Claimer", "claim", "has_ready", "next_due"]


def _promote_due(conn: sqlite3.Connection, queue: str, now: float) -> None:
    tally = counters.Tally()
    for tenant, head in conn.execute(
        f"UPDATE pmsq_messages SET state = {READY:d} WHERE queue = ? AND state = {SCHEDULED:d} AND "
        "available_at <= ? RETURNING tenant, head",
        (queue, now),
    ).fetchall():
        tally.move(queue, tenant, counters.K_DELAYED, counters.kind(READY, head))
    tally.flush(conn)


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
        "SELECT seq, attempt, tenant, id, key, correlation_id, lease_expires, "
        f"{CLAIM_COLUMNS} FROM pmsq_messages "
        f"WHERE queue = ? AND state = {IN_FLIGHT:d} AND lease_expires <= ?",
        (queue, now),
    ).fetchall()
    for seq, attempt, tenant, mid, key, correlation, lease_expires, *claim_facts in expired:
        metrics.add(queue, tenant, failed=1)
        # This row tells the delivery whose lease ran out (its holder never settled).
        worker, delivery = carried(True, claim_facts)
        journal.add(
            now,
            Event.LEASE_EXPIRED,
            mid,
            queue,
            tenant,
            key,
            correlation,
            attempt=attempt,
            worker=worker,
            delivery=delivery,
            expired_at=lease_expires,
        )
        if attempt >= cfg.max_attempts:
            bury(
                conn,
                configs,
                seq,
                now=now,
                reason=expired_reason(attempt, cfg.max_attempts),
                error_type=LEASE_EXPIRED,
                traceback=None,
                journal=journal,
            )
            metrics.add(queue, tenant, dead=1)
        else:
            # The token stays: until someone else claims the message, its late
            # holder may still settle it (a lease is lost only to another holder).
            # Its delivery is told: a late settle or a lease taken back carries none.
            head = conn.execute(
                f"UPDATE pmsq_messages SET state = {READY:d}, lease_expires = NULL, "
                "claimed_at = NULL, error_type = ?, error = ? WHERE seq = ? RETURNING head",
                (LEASE_EXPIRED, expired_error(attempt), seq),
            ).fetchone()[0]
            counters.bump(conn, queue, tenant, counters.K_IN_FLIGHT, counters.kind(READY, head))
            metrics.add(queue, tenant, retried=1)


def _scan_tenants(
    conn: sqlite3.Connection, queue: str
) -> Callable[[str, bool, int, str | None], list[str]]:
    """Tenants with ready heads from a start, as :func:`rotation_order` scans them.

    A loose index scan: one index seek per tenant, whatever the backlog.
    """

    def scan(start: str, inclusive: bool, limit: int, upto: str | None) -> list[str]:
        found: list[str] = []
        op = ">=" if inclusive else ">"
        cur: str | None = start
        while cur is not None and len(found) < limit:
            cur = conn.execute(
                f"SELECT MIN(tenant) FROM pmsq_messages WHERE queue = ? AND tenant {op} ? "
                f"AND state = {READY:d} AND head = 1",
                (queue, cur),
            ).fetchone()[0]
            if cur is None or (upto is not None and cur > upto):
                break
            found.append(cur)
            op = ">"
        return found

    return scan


def _heads(conn: sqlite3.Connection, queue: str, tenant: str, limit: int) -> list[Any]:
    return conn.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM pmsq_messages INDEXED BY pmsq_ix_ready "
        f"WHERE queue = ? AND tenant = ? AND state = {READY:d} AND head = 1 "
        "ORDER BY priority DESC, seq LIMIT ?",
        (queue, tenant, limit),
    ).fetchall()


def _rate_budget(conn: sqlite3.Connection, queue: str, rate: RateLimit, now: float) -> RateBudget:
    def used(scope: str) -> int:
        conn.execute(
            "DELETE FROM pmsq_rate WHERE queue = ? AND scope = ? AND ts <= ?",
            (queue, scope, now - rate.per),
        )
        return int(
            conn.execute(
                "SELECT COUNT(*) FROM pmsq_rate WHERE queue = ? AND scope = ?", (queue, scope)
            ).fetchone()[0]
        )

    return RateBudget(rate, used)


def _select(
    conn: sqlite3.Connection,
    cfg: QueueConfig,
    queue: str,
    n: int,
    tenant: str | None,
    now: float,
    holds: Holds | None = None,
) -> list[Any]:
    if holds is not None:
        n = holds.limit(n)
        if n <= 0:
            return []
    rate = _rate_budget(conn, queue, cfg.rate_limit, now) if cfg.rate_limit else None
    # Rate-limited scopes may reject heads, so look a little further ahead.
    fetch = n if rate is None else n * 4
    if holds is not None:
        # Each held key has at most one head, which may take a place in a front.
        fetch += len(holds.keys) + (n if holds.probes else 0)
    if tenant is not None:
        order = [tenant_in(tenant)]
    else:
        lo, hi = conn.execute(
            f"SELECT (SELECT MIN(tenant) FROM pmsq_messages WHERE queue = ?1 "
            f"AND state = {READY:d} AND head = 1), (SELECT MAX(tenant) FROM pmsq_messages "
            f"WHERE queue = ?1 AND state = {READY:d} AND head = 1)",
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
            cursor = cursor_row[0] if cursor_row else None
            # No cursor yet: start after the no-tenant tenant ''.
            order = rotation_order(cursor or "", _scan_tenants(conn, queue))
    if holds is not None:
        order = [t for t in order if t not in holds.tenants]
    fronts = [_heads(conn, queue, t, fetch) for t in order]
    if holds is not None:
        holds.admit(fronts)
    picked, last = pick(fronts, n, rate)
    if rate is not None and rate.taken:
        conn.executemany(
            "INSERT INTO pmsq_rate (queue, scope, ts) VALUES (?, ?, ?)",
            [(queue, scope, now) for scope in rate.taken],
        )
    if len(order) > 1 and last is not None:
        conn.execute("UPDATE pmsq_queues SET rr_tenant = ? WHERE name = ?", (order[last], queue))
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
    probes: set[str] | None = None,
) -> list[Claimed]:
    """Lease up to ``n`` messages of ``queue`` (inside the caller's write transaction).

    Outcomes of expired leases are counted into ``metrics`` and recorded in
    ``journal``; a delivery's facts (``consumer``: who claimed) wait on its
    message row for the journal row of its outcome. The ids of half-open
    circuits' probes leased are added to ``probes``.
    """
    cfg = configs.get(conn, queue)
    # One indexed look at both clocks instead of an UPDATE and a SELECT that
    # almost always find nothing.
    scheduled, leased = _due(conn, queue)
    if scheduled is not None and scheduled <= now:
        _promote_due(conn, queue, now)
    if leased is not None and leased <= now:
        _expire_leases(conn, configs, cfg, queue, now, metrics, journal)
    # One primary-key seek; None (no pause of this queue) leaves the claim as it was.
    holds = pauses.load_holds(conn, queue, now)
    if holds is not None and not holds.any:
        holds = None
    out: list[Claimed] = []
    leases: list[tuple[tuple[Any, ...], str]] = []
    # Where in the journal each delivery happens (see journal_read): the rows
    # already written (looked up at the first delivery), then those collected
    # in this transaction before it.
    written: int | None = None
    waits: dict[str, list[float]] = {}
    expires = now + cfg.lease
    rows = _select(conn, cfg, queue, n, tenant, now, holds)
    buried = False
    while True:
        if not rows:
            # Burying a head may have made the next of its key the head: look again.
            if not buried or len(out) >= n:
                break
            _lease(conn, queue, leases, journal)  # so the new selection skips what is taken
            leases, buried = [], False
            rows = _select(conn, cfg, queue, n - len(out), tenant, now, holds)
            if not rows:
                break
        row = rows.pop(0)
        unfit = _unfit(row, now)
        if unfit is not None:
            # A damaged or expired message must not block the queue: dead-letter
            # it and keep going.
            reason, error_type = unfit
            bury(
                conn,
                configs,
                row["seq"],
                now=now,
                reason=reason,
                error_type=error_type,
                traceback=None,
                journal=journal,
            )
            if error_type == EXPIRED_TYPE:
                journal.add(
                    now,
                    Event.EXPIRED,
                    row["id"],
                    queue,
                    row["tenant"],
                    row["key"],
                    row["correlation_id"],
                    attempt=row["attempt"],
                    expires_at=row["expires_at"],
                )
            metrics.add(queue, row["tenant"], dead=1)
            buried = True
            continue
        if holds is not None and _probe(conn, holds, queue, row) and probes is not None:
            probes.add(row["id"])
        token = secrets.token_hex(8)
        if journal.enabled:
            # The delivery's facts wait on the message row for its outcome's journal row.
            if written is None:
                written = journal.tail(conn)
            facts = (now, journal.place(written), consumer, journal.process)
            leases.append(((token, expires, *facts, row["seq"]), row["tenant"]))
        else:
            leases.append(((token, expires, row["seq"]), row["tenant"]))
        if row["attempt"] == 0:
            # First delivery: how long it waited since it became due (wait_p50_ms).
            waits.setdefault(row["tenant"], []).append((now - row["available_at"]) * 1000.0)
        out.append(
            claimed_from_row(row, token=token, attempt=row["attempt"] + 1, lease_expires=expires)
        )
    _lease(conn, queue, leases, journal)
    if waits:
        metrics.add_waits(queue, waits)
    return out


def _unfit(row: Any, now: float) -> tuple[str, str] | None:
    """``(reason, error_type)`` when a selected row must be dead-lettered, not delivered."""
    if zlib.crc32(row["payload"]) != row["crc"]:
        return CORRUPT_REASON, CORRUPT_PAYLOAD
    expires_at = row["expires_at"]
    if expires_at is not None and expires_at <= now:
        return EXPIRED_REASON, EXPIRED_TYPE
    return None


def _probe(conn: sqlite3.Connection, holds: Holds, queue: str, row: Any) -> bool:
    """A row claimed through a half-open circuit is its probe; the scope is held again.

    Returns whether ``row`` is a probe.
    """
    scope = holds.probe_scope(row)
    if scope is None:
        return False
    pauses.set_probe(conn, queue, scope, row["id"])
    holds.probes.discard(scope)
    if scope == ("", ""):
        holds.queue = True
    elif scope[1]:
        holds.keys.add(scope)
    else:
        holds.tenants.add(scope[0])
    return True


_LEASE = (
    f"UPDATE pmsq_messages SET state = {IN_FLIGHT:d}, attempt = attempt + 1, "
    "lease_token = ?, lease_expires = ?, "
)
# With a journal: the delivery's facts (claimed_at, claimed_after, claimed_by,
# claimed_process). Without one, no outcome row will tell the delivery, and
# facts left by an earlier one must not be told with a later outcome.
_LEASE_JOURNALED = _LEASE + (
    "claimed_at = ?, claimed_after = ?, claimed_by = ?, claimed_process = ? WHERE seq = ?"
)
_LEASE_UNJOURNALED = _LEASE + "claimed_at = NULL WHERE seq = ?"


def _lease(
    conn: sqlite3.Connection,
    queue: str,
    leases: list[tuple[tuple[Any, ...], str]],
    journal: Journal,
) -> None:
    # One statement for a batch: the rows were selected together as ready key
    # heads, so marking them leased can wait until the batch is picked. Each
    # lease is (parameters of its statement, tenant).
    if leases:
        conn.executemany(
            _LEASE_JOURNALED if journal.enabled else _LEASE_UNJOURNALED,
            [lease[0] for lease in leases],
        )
        # Ready heads, now in flight: one counts UPDATE per tenant of the batch.
        for tenant, n in Counter(lease[1] for lease in leases).items():
            counters.add(conn, queue, tenant, (-n, 0, n, 0))


def has_ready(conn: sqlite3.Connection, queue: str, now: float, tenant: str | None) -> bool:
    """Lock-free probe: is anything ready, due, or holding an expired lease?

    While the queue (or this tenant of it) is paused only an expired lease
    counts: a claim must still settle it (an attempt spent, maybe a dead
    letter), though it leases nothing.
    """
    if pauses.held_scopes(conn, queue, tenant, now):
        leased = _due(conn, queue)[1]
        return leased is not None and leased <= now
    if tenant is None:
        ready = conn.execute(
            f"SELECT 1 FROM pmsq_messages WHERE queue = ? AND state = {READY:d} AND head = 1 "
            "LIMIT 1",
            (queue,),
        ).fetchone()
    else:
        ready = conn.execute(
            f"SELECT 1 FROM pmsq_messages WHERE queue = ? AND tenant = ? AND state = {READY:d} "
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
        "SELECT (SELECT MIN(available_at) FROM pmsq_messages WHERE queue = ? AND state = "
        f"{SCHEDULED:d}), "
        f"(SELECT MIN(lease_expires) FROM pmsq_messages WHERE queue = ? AND state = {IN_FLIGHT:d})",
        (queue, queue),
    ).fetchone()
    return row[0], row[1]


class Claimer:
    """Claims for one backend: a lock-free probe first, then one group-commit request.

    Idle consumers never take the write lock: a claim first looks, without
    it, whether anything is ready. A consumer whose last claim of a (queue,
    tenant) scope came back full is busy there and skips the probe. The claim
    itself shares the transaction of concurrent puts and settlements.
    """

    def __init__(
        self,
        store: Store,
        group: GroupCommit,
        configs: ConfigReader,
        metrics: Metrics,
        journal: Journal,
        probes: set[str] | None = None,
    ) -> None:
        self._probes = probes
        self._store = store
        self._group = group
        self._configs = configs
        self._metrics = metrics
        self._journal = journal
        # (queue, tenant) scopes whose last claim came back full.
        self._busy: set[tuple[str, str | None]] = set()

    def claim(
        self, queue: str, n: int, *, now: float, tenant: str | None, consumer: str | None
    ) -> list[Claimed]:
        """Lease up to ``n`` messages of ``queue`` (see ``Backend.claim``)."""
        if n <= 0:
            return []
        called = time.monotonic()
        scope = (queue, tenant)
        if scope not in self._busy:
            with self._store.reading() as conn:
                if not has_ready(conn, queue, now, tenant):
                    return []
        # sync=False: see Store.write (a lost claim only makes its message
        # deliverable again); a batch with a put or an ack in it syncs anyway.
        got = self._group.run(
            lambda c: claim(
                c,
                self._configs,
                queue,
                n,
                now=after_wait(now, called),
                tenant=tenant,
                metrics=self._metrics,
                journal=self._journal,
                consumer=consumer,
                probes=self._probes,
            ),
            now,
            sync=False,
        )
        if len(got) == n:
            self._busy.add(scope)
        else:
            self._busy.discard(scope)
        return got
