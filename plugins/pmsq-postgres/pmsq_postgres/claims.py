"""Claiming: expired leases count as attempts, due messages become ready, then
the heads of key lines are leased in priority order, rotating over tenants.

Concurrent claimers never wait on each other: every row a claim touches is
selected ``FOR UPDATE SKIP LOCKED``, so a row another claim holds is simply
passed over. Only heads are claimable and a key has one head, so two
consumers never lease two messages of one key. The only serialisation is for
rate-limited queues, whose claims take a per-queue advisory lock so the
sliding-window count is exact across processes.
"""

from __future__ import annotations

from typing import Any

import attrs

from pmsq.backends.sqlkit.deadletter import LEASE_EXPIRED, expired_reason
from pmsq.backends.sqlkit.rotation import RateBudget, pick, rotation_order
from pmsq.backends.sqlkit.rows import claimed_from_row, tenant_in
from pmsq.backends.sqlkit.states import IN_FLIGHT, READY, SCHEDULED
from pmsq.backends.types import Claimed
from pmsq.config import QueueConfig, RateLimit
from pmsq_postgres import circuit, expiry
from pmsq_postgres.pauses import holds
from pmsq_postgres.puts import COLUMNS, ConfigReader
from pmsq_postgres.settle import bury
from pmsq_postgres.tx import Tx

__all__ = ["claim", "has_ready", "next_due"]

# Rows of housekeeping (expired leases, due messages) one claim does at most.
_BATCH = 500


def _heads(hold: str) -> str:
    # One tenant's first ready heads, skipping rows other claims hold.
    return (
        f"SELECT {COLUMNS} FROM {{s}}.messages AS h WHERE queue = %(q)s "
        f"AND tenant = %(t)s AND state = {READY:d} AND head{hold} ORDER BY priority DESC, seq "
        "LIMIT %(n)s FOR UPDATE SKIP LOCKED"
    )


def _heads_of_tenants(hold: str) -> str:
    return (
        f"SELECT m.* FROM unnest(%(ts)s::text[]) AS t(tenant) CROSS JOIN LATERAL (SELECT "
        f"{COLUMNS} FROM {{s}}.messages AS h WHERE queue = %(q)s AND tenant = t.tenant "
        f"AND state = {READY:d} AND head{hold} ORDER BY priority DESC, seq LIMIT %(n)s "
        "FOR UPDATE SKIP LOCKED) AS m"
    )


# A new lease token: a random UUID (122 random bits), unique for every lease.
_NEW_TOKEN = "replace(gen_random_uuid()::text, '-', '')"
_RETURNED = ", ".join(f"m.{c.strip()}" for c in COLUMNS.split(","))
_LEASE = (
    f"UPDATE {{s}}.messages AS m SET state = {IN_FLIGHT:d}, attempt = m.attempt + 1, "
    f"lease_token = {_NEW_TOKEN}, lease_expires = %(exp)s "
)


def _lease_heads(hold: str) -> str:
    # Pick one tenant's first heads (skipping rows other claims hold) and lease them.
    return (
        "WITH picked AS (SELECT seq FROM {s}.messages AS h WHERE queue = %(q)s "
        f"AND tenant = %(t)s AND state = {READY:d} AND head{hold} ORDER BY priority DESC, seq "
        "LIMIT %(n)s FOR UPDATE SKIP LOCKED) "
        f"{_LEASE}FROM picked WHERE m.seq = picked.seq RETURNING {_RETURNED}"
    )


def _tenants_from(op: str, hold: str) -> str:
    # A loose index scan over ix_ready: one index seek per tenant with ready heads,
    # starting after (or at, with ">=") a tenant.
    return (
        "WITH RECURSIVE t(tenant) AS ("
        f"(SELECT tenant FROM {{s}}.messages AS h WHERE queue = %(q)s AND state = {READY:d} "
        f"AND head{hold} AND tenant {op} %(start)s ORDER BY tenant LIMIT 1) "
        "UNION ALL SELECT (SELECT h.tenant FROM {s}.messages h WHERE h.queue = %(q)s "
        f"AND h.state = {READY:d} AND h.head{hold} AND h.tenant > t.tenant ORDER BY h.tenant "
        "LIMIT 1) FROM t WHERE t.tenant IS NOT NULL) "
        "SELECT tenant FROM t WHERE tenant IS NOT NULL LIMIT %(n)s"
    )


def _tenant_range_sql(hold: str) -> str:
    # ORDER BY .. LIMIT 1 rather than min()/max(): with a pause filter the
    # planner would not turn an aggregate into an index seek, and would
    # read every ready head.
    ends = [
        f"(SELECT tenant FROM {{s}}.messages AS h WHERE queue = %(q)s AND state = {READY:d} "
        f"AND head{hold} ORDER BY tenant {way} LIMIT 1)"
        for way in ("", "DESC")
    ]
    return f"SELECT {ends[0]}, {ends[1]}"


@attrs.frozen
class _Statements:
    """The claim statements of one kind of queue: without pauses, or filtered by them."""

    heads: str
    heads_of_tenants: str
    lease_heads: str
    tenants_after: str
    tenants_all: str
    tenant_range: str

    @classmethod
    def build(cls, hold: str) -> _Statements:
        return cls(
            _heads(hold),
            _heads_of_tenants(hold),
            _lease_heads(hold),
            _tenants_from(">", hold),
            _tenants_from(">=", hold),
            _tenant_range_sql(hold),
        )


#: A queue without pauses: the statements are exactly those of a store without control.
_PLAIN = _Statements.build("")
#: A queue with pauses: every candidate head is checked against them.
_HELD = _Statements.build(f" AND NOT {holds('h')}")


# Statement 1 of every claim: make due messages ready, lock expired leases,
# and read the queue's config and its range of tenants with ready heads.
_PREPARE = (
    f"WITH due AS (UPDATE {{s}}.messages SET state = {READY:d} WHERE seq IN ("
    f"SELECT seq FROM {{s}}.messages WHERE queue = %(q)s AND state = {SCHEDULED:d} "
    "AND available_at <= %(now)s "
    "ORDER BY available_at LIMIT %(batch)s FOR UPDATE SKIP LOCKED) RETURNING 1), "
    "expired AS (SELECT seq, attempt, tenant FROM {s}.messages WHERE queue = %(q)s "
    f"AND state = {IN_FLIGHT:d} "
    "AND lease_expires <= %(now)s ORDER BY lease_expires LIMIT %(batch)s "
    "FOR UPDATE SKIP LOCKED) "
    "SELECT (SELECT config FROM {s}.queues WHERE name = %(q)s), "
    "(SELECT count(*) FROM due), "
    f"(SELECT min(tenant) FROM {{s}}.messages WHERE queue = %(q)s AND state = {READY:d} AND head), "
    f"(SELECT max(tenant) FROM {{s}}.messages WHERE queue = %(q)s AND state = {READY:d} AND head), "
    "ARRAY(SELECT seq FROM expired ORDER BY seq), ARRAY(SELECT attempt FROM expired ORDER BY seq), "
    "ARRAY(SELECT tenant FROM expired ORDER BY seq), "
    "EXISTS (SELECT 1 FROM {s}.pauses WHERE queue = %(q)s), "
    "EXISTS (SELECT 1 FROM {s}.pauses WHERE queue = %(q)s AND circuit AND until <= %(now)s)"
)


def _expire(
    tx: Tx,
    configs: ConfigReader,
    cfg: QueueConfig,
    queue: str,
    now: float,
    expired: list[tuple[int, int, str]],
) -> None:
    # A lease that ran out counts as a failed attempt: a worker that was killed
    # or hung. Past max_attempts the message is dead even though no handler
    # ever returned (poison messages that crash their worker).
    back: list[int] = []
    for seq, attempt, tenant in expired:
        tx.count(queue, tenant, failed=1)
        if attempt >= cfg.max_attempts:
            bury(
                tx,
                configs,
                queue,
                seq,
                token=None,
                now=now,
                reason=expired_reason(attempt, cfg.max_attempts),
                error_type=LEASE_EXPIRED,
                traceback=None,
            )
            tx.count(queue, tenant, dead=1)
        else:
            back.append(seq)
            tx.count(queue, tenant, retried=1)
    if back:
        # The token stays: until someone else claims the message, its late
        # holder may still settle it (a lease is lost only to another holder).
        tx.execute(
            f"UPDATE {{s}}.messages SET state = {READY:d}, lease_expires = NULL, "
            # The error text is expired_error(attempt), built in SQL.
            "error_type = %s, error = 'lease expired on attempt ' || attempt "
            "WHERE seq = ANY(%s)",
            (LEASE_EXPIRED, back),
        )


def _rate_budget(tx: Tx, queue: str, rate: RateLimit, now: float) -> RateBudget:
    # Serialise claims of this queue: counting then logging must be atomic.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
        (f"pmsq-rate:{tx.sql.schema}:{queue}",),
    )

    def used(scope: str) -> int:
        tx.execute(
            "DELETE FROM {s}.rate WHERE queue = %s AND scope = %s AND ts <= %s",
            (queue, scope, now - rate.per),
        )
        return int(
            tx.one("SELECT count(*) FROM {s}.rate WHERE queue = %s AND scope = %s", (queue, scope))[
                0
            ]
        )

    return RateBudget(rate, used)


def _log_rate(tx: Tx, queue: str, rate: RateBudget, now: float) -> None:
    if rate.taken:
        tx.execute(
            "INSERT INTO {s}.rate (queue, scope, ts) SELECT %s, scope, %s "
            "FROM unnest(%s::text[]) AS u(scope)",
            (queue, now, rate.taken),
        )


def _tenant_range(
    tx: Tx, sql: _Statements, queue: str, now: float
) -> tuple[str | None, str | None]:
    row = tx.one(sql.tenant_range, {"q": queue, "now": now})
    return row[0], row[1]


def _rotation(
    tx: Tx, sql: _Statements, queue: str, now: float, lo: str | None, hi: str | None
) -> tuple[list[str], bool]:
    """Tenants with ready heads in rotation order, and whether we own the cursor."""
    if lo is None:
        return [], False
    if lo == hi:  # one tenant: nothing to rotate over
        return [lo], False
    # The cursor row is locked without waiting: a claim running alongside
    # reads it as is and leaves advancing it to the claim that holds it.
    cursor = tx.one(
        "SELECT rr_tenant FROM {s}.queues WHERE name = %s FOR UPDATE SKIP LOCKED", (queue,)
    )
    owned = cursor is not None
    if cursor is None:
        cursor = tx.one("SELECT rr_tenant FROM {s}.queues WHERE name = %s", (queue,))
    after = cursor[0] if cursor else None

    def scan(start: str, inclusive: bool, limit: int, upto: str | None) -> list[str]:
        text = sql.tenants_all if inclusive else sql.tenants_after
        return [r[0] for r in tx.all(text, {"q": queue, "start": start, "n": limit, "now": now})]

    return rotation_order(after, scan), owned


def _select(
    tx: Tx,
    sql: _Statements,
    cfg: QueueConfig,
    queue: str,
    n: int,
    tenant: str | None,
    now: float,
    tenants: tuple[str | None, str | None],
) -> list[dict[str, Any]]:
    rate = _rate_budget(tx, queue, cfg.rate_limit, now) if cfg.rate_limit else None
    # Rate-limited scopes may reject heads, so look a little further ahead.
    fetch = n if rate is None else n * 4
    owned = False
    args: dict[str, Any] = {"q": queue, "n": fetch, "now": now}
    if tenant is not None:
        order = [tenant_in(tenant)]
        rows = tx.dicts(sql.heads, {**args, "t": order[0]})
    else:
        order, owned = _rotation(tx, sql, queue, now, *tenants)
        if not order:
            return []
        if len(order) == 1:
            rows = tx.dicts(sql.heads, {**args, "t": order[0]})
        else:
            rows = tx.dicts(sql.heads_of_tenants, {**args, "ts": order})
    fronts: list[list[dict[str, Any]]] = [[] for _ in order]
    index = {t: i for i, t in enumerate(order)}
    for row in sorted(rows, key=lambda r: (-r["priority"], r["seq"])):
        fronts[index[row["tenant"]]].append(row)
    picked, last = pick(fronts, n, rate)
    if rate is not None:
        _log_rate(tx, queue, rate, now)
    if owned and last is not None:
        tx.execute("UPDATE {s}.queues SET rr_tenant = %s WHERE name = %s", (order[last], queue))
    return picked


def _lease(
    tx: Tx,
    sql: _Statements,
    cfg: QueueConfig,
    queue: str,
    n: int,
    *,
    now: float,
    tenant: str | None,
    tenants: tuple[str | None, str | None],
) -> list[dict[str, Any]]:
    """Pick and lease up to ``n`` heads; the leased rows in delivery order."""
    lo, hi = tenants
    if tenant is None and lo is None:
        return []
    expires = now + cfg.lease
    if cfg.rate_limit is None and (tenant is not None or lo == hi):
        # One tenant in play: pick and lease in one statement.
        rows = tx.dicts(
            sql.lease_heads,
            {
                "q": queue,
                "t": tenant_in(tenant) if tenant is not None else lo,
                "n": n,
                "exp": expires,
                "now": now,
            },
        )
        rows.sort(key=lambda r: (-r["priority"], r["seq"]))
        return rows
    picked = _select(tx, sql, cfg, queue, n, tenant, now, tenants)
    if not picked:
        return []
    rows = tx.dicts(
        f"{_LEASE}FROM unnest(%(seqs)s::bigint[]) WITH ORDINALITY AS u(seq, i) "
        f"WHERE m.seq = u.seq RETURNING u.i, {_RETURNED}",
        {"exp": expires, "seqs": [r["seq"] for r in picked]},
    )
    rows.sort(key=lambda r: r["i"])
    return rows


def claim(
    tx: Tx, configs: ConfigReader, queue: str, n: int, *, now: float, tenant: str | None
) -> list[Claimed]:
    """Lease up to ``n`` messages of ``queue`` inside the open transaction.

    The common cases take two statements: one to promote due messages, lock
    expired leases, read the config and see whether the queue has pauses;
    one that picks and leases the heads (``UPDATE .. RETURNING`` over a
    ``SKIP LOCKED`` pick). Several tenants, rate limits, expired leases and
    pauses take a few more. A leased message found past its ``expires_at``
    is dead-lettered instead of delivered.
    """
    text, promoted, lo, hi, exp_seqs, exp_attempts, exp_tenants, paused, lapsing = tx.one(
        _PREPARE, {"q": queue, "now": now, "batch": _BATCH}
    )
    cfg = configs.get(tx, queue) if text is None else configs.decode(text)
    changed = bool(promoted)
    if exp_seqs:
        _expire(
            tx,
            configs,
            cfg,
            queue,
            now,
            list(zip(exp_seqs, exp_attempts, exp_tenants, strict=True)),
        )
        changed = True
    sql = _PLAIN
    rows: list[dict[str, Any]] = []
    if paused:
        sql = _HELD
        changed = True
    if lapsing:
        # A circuit past its until may be half-open: each lets one message
        # through as its probe. (A lapsed timed pause stays stored, no longer
        # in force: a clock stepped back finds it in force again.)
        rows = circuit.take_probes(tx, queue, n, now=now, expires=now + cfg.lease, tenant=tenant)
    if changed and tenant is None:
        # What statement 1 made ready was not in its snapshot; pauses filter the range.
        lo, hi = _tenant_range(tx, sql, queue, now)
    if len(rows) < n:
        rows += _lease(tx, sql, cfg, queue, n - len(rows), now=now, tenant=tenant, tenants=(lo, hi))
    live: list[dict[str, Any]] = []
    while True:
        kept = expiry.bury_expired(tx, configs, rows, now)
        live += kept
        if len(kept) == len(rows) or len(live) >= n:
            break
        # Burying an expired head moved the next message of its key up: look again.
        if tenant is None:
            lo, hi = _tenant_range(tx, sql, queue, now)
        rows = _lease(tx, sql, cfg, queue, n - len(live), now=now, tenant=tenant, tenants=(lo, hi))
    expires = now + cfg.lease
    for row in live:
        if row["attempt"] == 1:
            # First delivery: how long it waited since it became due (wait_p50_ms).
            tx.count(queue, row["tenant"], wait_ms=(now - row["available_at"]) * 1000.0)
    return [
        claimed_from_row(
            row, token=row["lease_token"], attempt=row["attempt"], lease_expires=expires
        )
        for row in live
    ]


def has_ready(tx: Tx, queue: str, now: float, tenant: str | None) -> bool:
    """Cheap probe: is anything ready, due, or holding an expired lease?"""
    if tenant is None:
        ready = tx.one(
            f"SELECT 1 FROM {{s}}.messages WHERE queue = %s AND state = {READY:d} AND head LIMIT 1",
            (queue,),
        )
    else:
        ready = tx.one(
            f"SELECT 1 FROM {{s}}.messages WHERE queue = %s AND tenant = %s AND state = {READY:d} "
            "AND head LIMIT 1",
            (queue, tenant_in(tenant)),
        )
    if ready:
        return True
    due = next_due(tx, queue)
    return due is not None and due <= now


def next_due(tx: Tx, queue: str) -> float | None:
    """Earliest delayed message or lease expiry in ``queue``."""
    row = tx.one(
        f"SELECT (SELECT min(available_at) FROM {{s}}.messages WHERE queue = %(q)s AND state = "
        f"{SCHEDULED:d}), "
        f"(SELECT min(lease_expires) FROM {{s}}.messages WHERE queue = %(q)s AND state = "
        f"{IN_FLIGHT:d})",
        {"q": queue},
    )
    values = [v for v in row if v is not None]
    return min(values) if values else None
