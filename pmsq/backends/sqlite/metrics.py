"""Writing the buffered outcome counters into ``pmsq_metrics`` (see ``sqlkit.metrics``)."""

from __future__ import annotations

import json
import sqlite3

from pmsq.backends.sqlkit.metrics import TOTAL_SLOT, Counts, slot_of

__all__ = ["write"]


def write(
    conn: sqlite3.Connection, counts: Counts, hist: Counts, waits: Counts, now: float
) -> None:
    """Add ``counts`` to the current slot and the totals; ``hist`` and ``waits`` to the slot."""
    slot = slot_of(now)
    for (queue, tenant), c in counts.items():
        for s in (TOTAL_SLOT, slot):
            conn.execute(
                "INSERT INTO pmsq_metrics (queue, tenant, slot, processed, failed, retried, "
                "dead_lettered, put) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
                "processed = processed + excluded.processed, failed = failed + "
                "excluded.failed, retried = retried + excluded.retried, dead_lettered = "
                "dead_lettered + excluded.dead_lettered, put = put + excluded.put",
                (queue, tenant, s, *c),
            )
    for column, source in (("hist", hist), ("wait_hist", waits)):
        for (queue, tenant), h in source.items():
            conn.execute(
                "INSERT INTO pmsq_metrics (queue, tenant, slot) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (queue, tenant, slot),
            )
            row = conn.execute(
                f"SELECT {column} FROM pmsq_metrics WHERE queue = ? AND tenant = ? AND slot = ?",
                (queue, tenant, slot),
            ).fetchone()
            old = json.loads(row[0]) if row and row[0] else []
            merged = [a + (old[i] if i < len(old) else 0) for i, a in enumerate(h)]
            conn.execute(
                f"UPDATE pmsq_metrics SET {column} = ? WHERE queue = ? AND tenant = ? AND slot = ?",
                (json.dumps(merged), queue, tenant, slot),
            )
