"""Maintained message counts per queue, tenant and state, so ``stats()`` never scans the backlog.

``pmsq_counts`` holds one row per (queue, tenant) with the number of its
messages that are ready, delayed (scheduled, or waiting behind their key),
in flight and dead. From schema version 4 to 6 triggers on
``pmsq_messages`` kept it; they cost one counts UPDATE per message per
state change, about 15 % of the backend's CPU per message. Since version 7
the code that changes a message counts the change itself, in the same
transaction (a rollback undoes both), and a batch (a ``put_many``, a claim,
a worker's acks) adds up its moves first: one UPDATE per (queue, tenant)
per batch. Every statement that inserts, deletes or changes the ``state``
or ``head`` of a message must call :func:`bump` (or fill a :class:`Tally`);
the stateful test ``tests/backends/test_counters.py`` compares the counts
with :func:`recount` after every step of every path.

``stats()`` then reads a few rows per queue, plus one index seek per
(queue, tenant) for the longest due message (``pmsq_ix_due``), whatever
the backlog.

``recount`` is the full scan, kept as the reference the tests (and a
suspicious operator) compare the counters with.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from pmsq.backends.sqlkit.states import DEAD, IN_FLIGHT, READY, SCHEDULED, WAITING

__all__ = [
    "COUNTERS_DDL",
    "DROP_TRIGGERS",
    "KINDS",
    "Tally",
    "add",
    "bump",
    "kind",
    "oldest_due",
    "read",
    "recount",
]

#: Column order of a count row.
KINDS = ("ready", "delayed", "in_flight", "dead")


# Kind indexes into KINDS.
K_READY, K_DELAYED, K_IN_FLIGHT, K_DEAD = 0, 1, 2, 3


def kind(state: int, head: object) -> int:
    """The index in :data:`KINDS` of a message in ``state`` with ``head``."""
    if state == READY:
        return K_READY if head else K_DELAYED
    if state == SCHEDULED:
        return K_DELAYED
    return K_IN_FLIGHT if state == IN_FLIGHT else K_DEAD


class Tally:
    """Count moves between kinds in memory; :meth:`flush` writes them in one UPDATE per pair."""

    __slots__ = ("_moves",)

    def __init__(self) -> None:
        self._moves: dict[tuple[str, str], list[int]] = {}

    def move(self, queue: str, tenant: str, old: int | None, new: int | None, n: int = 1) -> None:
        """``n`` messages of (``queue``, ``tenant``) leave kind ``old`` for ``new``.

        ``old=None``: they are new; ``new=None``: they are gone.
        """
        if old == new:
            return
        d = self._moves.get((queue, tenant))
        if d is None:
            d = self._moves[(queue, tenant)] = [0, 0, 0, 0]
        if old is not None:
            d[old] -= n
        if new is not None:
            d[new] += n

    def flush(self, conn: sqlite3.Connection) -> None:
        """Add the moves to ``pmsq_counts`` (in the caller's transaction) and forget them."""
        moves, self._moves = self._moves, {}
        rows = [(q, t, *d) for (q, t), d in moves.items() if any(d)]
        if rows:
            conn.executemany(_UPSERT, rows)


# Adds a (queue, tenant)'s moves; its first message creates the row.
_UPSERT = (
    f"INSERT INTO pmsq_counts (queue, tenant, {', '.join(KINDS)}) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (queue, tenant) DO UPDATE SET "
    + ", ".join(f"{c} = {c} + excluded.{c}" for c in KINDS)
)


def bump(
    conn: sqlite3.Connection,
    queue: str,
    tenant: str,
    old: int | None,
    new: int | None,
    n: int = 1,
) -> None:
    """``n`` messages of (``queue``, ``tenant``) moved from kind ``old`` to ``new`` (None: none)."""
    if old == new:
        return
    d = [0, 0, 0, 0]
    if old is not None:
        d[old] -= n
    if new is not None:
        d[new] += n
    conn.execute(_UPSERT, (queue, tenant, *d))


def add(
    conn: sqlite3.Connection, queue: str, tenant: str, delta: tuple[int, int, int, int]
) -> None:
    """Add ``delta`` (ready, delayed, in flight, dead) to (``queue``, ``tenant``)'s counts."""
    conn.execute(_UPSERT, (queue, tenant, *delta))


def _kind(row: str) -> str:
    # The kind of a message row (NEW or OLD), as a CASE expression.
    return (
        f"(CASE WHEN {row}.state = {READY:d} AND {row}.head = 1 THEN 0 "
        f"WHEN {row}.state IN {WAITING} THEN 1 WHEN {row}.state = {IN_FLIGHT:d} THEN 2 "
        "ELSE 3 END)"
    )


def _insert(row: str) -> str:
    # An upsert counting one message of row's kind (the pair's first message makes the row).
    k = _kind(row)
    values = ", ".join(f"({k} = {i})" for i in range(4))
    sets = ", ".join(f"{c} = {c} + excluded.{c}" for c in KINDS)
    return (
        f"INSERT INTO pmsq_counts (queue, tenant, {', '.join(KINDS)}) "
        f"VALUES ({row}.queue, {row}.tenant, {values}) "
        f"ON CONFLICT (queue, tenant) DO UPDATE SET {sets};"
    )


def _move(old: str | None, new: str | None, pair: str) -> str:
    # One UPDATE of the pair's row: minus old's kind, plus new's. The row exists:
    # every message was counted when it was inserted (or by the migration).
    terms = []
    for i, c in enumerate(KINDS):
        plus = f" + ({_kind(new)} = {i})" if new else ""
        minus = f" - ({_kind(old)} = {i})" if old else ""
        terms.append(f"{c} = {c}{plus}{minus}")
    return (
        f"UPDATE pmsq_counts SET {', '.join(terms)} "
        f"WHERE queue = {pair}.queue AND tenant = {pair}.tenant;"
    )


# Schema version 4, as separate statements (the triggers hold semicolons).
# The migration also counts what an existing store holds, in the same
# transaction as the triggers are created. Claims and settlements change a
# message's kind within its (queue, tenant): one UPDATE. Moving a message to
# another queue or tenant (nothing does today) is counted as a delete and an insert.
COUNTERS_DDL: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS pmsq_counts (
        queue TEXT NOT NULL,
        tenant TEXT NOT NULL,
        ready INTEGER NOT NULL DEFAULT 0,
        delayed INTEGER NOT NULL DEFAULT 0,
        in_flight INTEGER NOT NULL DEFAULT 0,
        dead INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (queue, tenant)
    ) WITHOUT ROWID""",
    f"""CREATE TRIGGER IF NOT EXISTS pmsq_tr_counts_insert AFTER INSERT ON pmsq_messages
    BEGIN {_insert("NEW")} END""",
    f"""CREATE TRIGGER IF NOT EXISTS pmsq_tr_counts_delete AFTER DELETE ON pmsq_messages
    BEGIN {_move("OLD", None, "OLD")} END""",
    f"""CREATE TRIGGER IF NOT EXISTS pmsq_tr_counts_update
    AFTER UPDATE OF state, head ON pmsq_messages
    WHEN {_kind("OLD")} != {_kind("NEW")} AND OLD.queue = NEW.queue AND OLD.tenant = NEW.tenant
    BEGIN {_move("OLD", "NEW", "NEW")} END""",
    f"""CREATE TRIGGER IF NOT EXISTS pmsq_tr_counts_move
    AFTER UPDATE OF queue, tenant ON pmsq_messages
    WHEN OLD.queue != NEW.queue OR OLD.tenant != NEW.tenant
    BEGIN {_move("OLD", None, "OLD")} {_insert("NEW")} END""",
    "DELETE FROM pmsq_counts",
    f"""INSERT INTO pmsq_counts (queue, tenant, {", ".join(KINDS)})
    SELECT queue, tenant,
        SUM(state = {READY:d} AND head = 1),
        SUM(state = {SCHEDULED:d} OR (state = {READY:d} AND head = 0)),
        SUM(state = {IN_FLIGHT:d}),
        SUM(state = {DEAD:d})
    FROM pmsq_messages GROUP BY queue, tenant""",
)

# Schema version 7: the code counts (see the module docstring); the triggers
# go, and the counts are taken again from the messages in the same step.
DROP_TRIGGERS: tuple[str, ...] = (
    *(f"DROP TRIGGER IF EXISTS pmsq_tr_counts_{n}" for n in ("insert", "delete", "update", "move")),
    *COUNTERS_DDL[-2:],
)

Counts = dict[tuple[str, str], tuple[int, int, int, int]]


def _scope(queue: str | None, tenant: str | None) -> tuple[str, list[str]]:
    where, args = [], []
    if queue is not None:
        where.append("queue = ?")
        args.append(queue)
    if tenant is not None:
        where.append("tenant = ?")
        args.append(tenant)
    return (" WHERE " + " AND ".join(where)) if where else "", args


def read(conn: sqlite3.Connection, queue: str | None, tenant: str | None) -> Counts:
    """The maintained counts, without (queue, tenant) pairs that have no message left."""
    where, args = _scope(queue, tenant)
    rows = conn.execute(f"SELECT queue, tenant, {', '.join(KINDS)} FROM pmsq_counts{where}", args)
    return {(r[0], r[1]): (r[2], r[3], r[4], r[5]) for r in rows if any(r[2:])}


def recount(
    conn: sqlite3.Connection, queue: str | None = None, tenant: str | None = None
) -> Counts:
    """The same counts from a full scan of the messages (linear in the backlog)."""
    where, args = _scope(queue, tenant)
    out: dict[tuple[str, str], list[int]] = {}
    for q, t, state, head, n in conn.execute(
        f"SELECT queue, tenant, state, head, COUNT(*) FROM pmsq_messages{where} "
        "GROUP BY queue, tenant, state, head",
        args,
    ):
        c = out.setdefault((q, t), [0, 0, 0, 0])
        kind = 0 if state == READY and head else 1 if state in (READY, SCHEDULED) else 2
        c[3 if state == DEAD else kind] += n
    return {k: (v[0], v[1], v[2], v[3]) for k, v in out.items()}


def oldest_due(
    conn: sqlite3.Connection, pairs: Iterable[tuple[str, str]], now: float
) -> dict[tuple[str, str], float]:
    """Due time (``available_at``) of the longest-due waiting message of each (queue, tenant).

    Only messages due at ``now`` count: one scheduled for next week is not
    late. One seek of ``pmsq_ix_due`` per pair: bounded by the number of
    pairs, not the backlog.
    """
    out = {}
    for q, t in pairs:
        row = conn.execute(
            "SELECT MIN(available_at) FROM pmsq_messages INDEXED BY pmsq_ix_due "
            f"WHERE queue = ? AND tenant = ? AND state IN {WAITING} AND available_at <= ?",
            (q, t, now),
        ).fetchone()
        if row[0] is not None:
            out[(q, t)] = float(row[0])
    return out
