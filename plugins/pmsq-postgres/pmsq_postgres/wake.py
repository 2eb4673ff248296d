"""Wake-up probes for idle consumers: a store-wide change token and one readiness query.

The token is the server's WAL position (``pg_current_wal_lsn()``): it moves
with every write to the cluster, so an unchanged position proves nothing was
written, and reading it costs one trivial query. Readiness is one round trip
for all the queues a worker serves, each probed through the partial indexes
(``ix_ready``, ``ix_scheduled``, ``ix_leases``); a queue with pauses also
checks its ready heads against them.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from pmsq.backends.sqlkit.states import IN_FLIGHT, READY, SCHEDULED
from pmsq.backends.types import Readiness
from pmsq_postgres.pauses import holds
from pmsq_postgres.tx import Tx

__all__ = ["readiness", "wal_position"]


def wal_position(tx: Tx) -> str | None:
    """The server's current WAL position, or ``None`` where it cannot be read (a standby)."""
    try:
        row = tx.one("SELECT pg_current_wal_lsn()::text")
    except psycopg.Error:
        return None
    return None if row is None else str(row[0])


# A ready head no pause holds (a half-open circuit counts as open: may say too much).
_FREE_HEAD = (
    f"EXISTS (SELECT 1 FROM {{s}}.messages h WHERE h.queue = q.name AND h.state = {READY:d} "
    f"AND h.head AND NOT {holds('h', '%(now)s', lapsing=True)})"
)
_READINESS = (
    "SELECT q.name, CASE WHEN EXISTS (SELECT 1 FROM {s}.pauses WHERE queue = q.name) "
    f"THEN {_FREE_HEAD} ELSE EXISTS (SELECT 1 FROM {{s}}.messages WHERE queue = q.name "
    f"AND state = {READY:d} AND head) END, (SELECT min(available_at) FROM {{s}}.messages "
    f"WHERE queue = q.name AND state = {SCHEDULED:d}), (SELECT min(lease_expires) "
    f"FROM {{s}}.messages WHERE queue = q.name AND state = {IN_FLIGHT:d}), "
    "(SELECT min(until) FROM {s}.pauses WHERE queue = q.name AND until > %(now)s) "
    "FROM unnest(%(queues)s::text[]) AS q(name)"
)


def readiness(tx: Tx, queues: Sequence[str], now: float) -> Readiness:
    """Which of ``queues`` have a ready head, a due delay or an expired lease at ``now``.

    A head that a pause holds does not count; the moment a pause lifts by
    itself (its ``until``) is a time the answer may change, like a delay's.
    """
    rows = tx.all(_READINESS, {"queues": list(queues), "now": now})
    ready: set[str] = set()
    later: list[float] = []
    for name, has_ready, scheduled, lease, lifts in rows:
        if has_ready:
            ready.add(name)
        for due in (scheduled, lease, lifts):
            if due is None:
                continue
            if due <= now:
                ready.add(name)
            else:
                later.append(float(due))
    return Readiness(frozenset(ready), min(later) if later else None)
