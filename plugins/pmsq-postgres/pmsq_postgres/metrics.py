"""Writing the buffered outcome counters into ``metrics`` (see ``pmsq.backends.sqlkit.metrics``).

Counts are added after each committed settlement and written at most about
once a second, in a short transaction of their own.
"""

from __future__ import annotations

from typing import Any

from pmsq.backends.sqlkit.metrics import TOTAL_SLOT, Counts, slot_of
from pmsq_postgres.tx import Tx

__all__ = ["write"]


def write(
    tx: Tx,
    counts: Counts,
    hist: Counts,
    waits: Counts,
    now: float,
) -> None:
    """Add buffered counts to the current slot and the totals (rows locked in sorted order)."""
    slot = slot_of(now)
    rows: list[dict[str, Any]] = []
    for queue, tenant in sorted(set(counts) | set(hist) | set(waits)):
        c = counts.get((queue, tenant), [0, 0, 0, 0, 0])
        for s in (TOTAL_SLOT, slot):
            rows.append(
                {
                    "queue": queue,
                    "tenant": tenant,
                    "slot": s,
                    "p": c[0],
                    "f": c[1],
                    "r": c[2],
                    "d": c[3],
                    "put": c[4],
                    # Handler times and waits are kept per slot only (recent ones are shown).
                    "hist": hist.get((queue, tenant)) if s != TOTAL_SLOT else None,
                    "wait": waits.get((queue, tenant)) if s != TOTAL_SLOT else None,
                }
            )
    tx.many(
        "INSERT INTO {s}.metrics AS m (queue, tenant, slot, processed, failed, retried, "
        "dead_lettered, put, hist, wait_hist) VALUES (%(queue)s, %(tenant)s, %(slot)s, %(p)s, "
        "%(f)s, %(r)s, %(d)s, %(put)s, %(hist)s::bigint[], %(wait)s::bigint[]) "
        "ON CONFLICT (queue, tenant, slot) DO UPDATE SET put = m.put + excluded.put, "
        "processed = m.processed + excluded.processed, failed = m.failed + excluded.failed, "
        "retried = m.retried + excluded.retried, "
        "dead_lettered = m.dead_lettered + excluded.dead_lettered, "
        "hist = CASE WHEN excluded.hist IS NULL THEN m.hist WHEN m.hist IS NULL THEN excluded.hist "
        "ELSE ARRAY(SELECT COALESCE(a, 0) + COALESCE(b, 0) FROM unnest(m.hist, excluded.hist) "
        "WITH ORDINALITY AS u(a, b, i) ORDER BY i) END, "
        "wait_hist = CASE WHEN excluded.wait_hist IS NULL THEN m.wait_hist "
        "WHEN m.wait_hist IS NULL THEN excluded.wait_hist "
        "ELSE ARRAY(SELECT COALESCE(a, 0) + COALESCE(b, 0) FROM unnest(m.wait_hist, "
        "excluded.wait_hist) WITH ORDINALITY AS u(a, b, i) ORDER BY i) END",
        rows,
    )
