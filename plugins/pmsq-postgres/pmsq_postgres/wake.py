"""Wake-up probes for idle consumers: a store-wide change token and one readiness query.

The token is the server's WAL position (``pg_current_wal_lsn()``): it moves
with every write to the cluster, so an unchanged position proves nothing was
written, and reading it costs one trivial query. Readiness is one round trip
for all the queues a worker serves, each probed through the partial indexes
(``ix_ready``, ``ix_scheduled``, ``ix_leases``).
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from pmsq.backends.sqlkit.states import IN_FLIGHT, READY, SCHEDULED
from pmsq.backends.types import Readiness
from pmsq_postgres.tx import Tx

__all__ = ["readiness", "wal_position"]


def wal_position(tx: Tx) -> str | None:
    """The server's current WAL position, or ``None`` where it cannot be read (a standby)."""
    try:
        row = tx.one("SELECT pg_current_wal_lsn()::text")
    except psycopg.Error:
        return None
    return None if row is None else str(row[0])


def readiness(tx: Tx, queues: Sequence[str], now: float) -> Readiness:
    """Which of ``queues`` have a ready head, a due delay or an expired lease at ``now``."""
    rows = tx.all(
        "SELECT q.name, EXISTS (SELECT 1 FROM {s}.messages WHERE queue = q.name "
        f"AND state = {READY:d} AND head), (SELECT min(available_at) FROM {{s}}.messages "
        f"WHERE queue = q.name AND state = {SCHEDULED:d}), (SELECT min(lease_expires) "
        f"FROM {{s}}.messages WHERE queue = q.name AND state = {IN_FLIGHT:d}) "
        "FROM unnest(%s::text[]) AS q(name)",
        (list(queues),),
    )
    ready: set[str] = set()
    later: list[float] = []
    for name, has_ready, scheduled, lease in rows:
        if has_ready:
            ready.add(name)
        for due in (scheduled, lease):
            if due is None:
                continue
            if due <= now:
                ready.add(name)
            else:
                later.append(float(due))
    return Readiness(frozenset(ready), min(later) if later else None)
