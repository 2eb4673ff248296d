"""Outcome counters and the handler-time histogram, buffered per process.

Counts are added after each committed settlement and written at most about
once a second, in a short transaction of their own, as upserts into
per-10-second slots (slot 0 holds the totals). A crash loses at most that
second of statistics, never a message.
"""

from __future__ import annotations

import threading
from typing import Any

from pmsq.stats import HISTOGRAM_BOUNDS_MS
from pmsq_postgres.tx import Tx

__all__ = ["SLOT_SECONDS", "TOTAL_SLOT", "Metrics"]

SLOT_SECONDS = 10
TOTAL_SLOT = 0
_BUCKETS = len(HISTOGRAM_BOUNDS_MS) + 1


def _bucket(ms: float) -> int:
    for i, bound in enumerate(HISTOGRAM_BOUNDS_MS):
        if ms <= bound:
            return i
    return len(HISTOGRAM_BOUNDS_MS)


class Metrics:
    """A thread-safe buffer of outcome counts per (queue, tenant)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], list[int]] = {}
        self._hist: dict[tuple[str, str], list[int]] = {}

    def __bool__(self) -> bool:
        with self._lock:
            return bool(self._counts)

    def add(
        self,
        queue: str,
        tenant: str,
        *,
        processed: int = 0,
        failed: int = 0,
        retried: int = 0,
        dead: int = 0,
        duration_ms: float | None = None,
    ) -> None:
        """Count one outcome."""
        with self._lock:
            c = self._counts.setdefault((queue, tenant), [0, 0, 0, 0])
            c[0] += processed
            c[1] += failed
            c[2] += retried
            c[3] += dead
            if duration_ms is not None:
                h = self._hist.setdefault((queue, tenant), [0] * _BUCKETS)
                h[_bucket(duration_ms)] += 1

    def take(self) -> tuple[dict[tuple[str, str], list[int]], dict[tuple[str, str], list[int]]]:
        """Remove and return everything buffered."""
        with self._lock:
            counts, hist = self._counts, self._hist
            self._counts, self._hist = {}, {}
        return counts, hist

    def give_back(
        self, counts: dict[tuple[str, str], list[int]], hist: dict[tuple[str, str], list[int]]
    ) -> None:
        """Re-buffer what a failed flush took, so it is written by the next one."""
        for (queue, tenant), c in counts.items():
            self.add(queue, tenant, processed=c[0], failed=c[1], retried=c[2], dead=c[3])
        with self._lock:
            for k, h in hist.items():
                mine = self._hist.setdefault(k, [0] * _BUCKETS)
                for i, n in enumerate(h):
                    mine[i] += n


def write(
    tx: Tx,
    counts: dict[tuple[str, str], list[int]],
    hist: dict[tuple[str, str], list[int]],
    now: float,
) -> None:
    """Add buffered counts to the current slot and the totals (rows locked in sorted order)."""
    slot = int(now // SLOT_SECONDS)
    rows: list[dict[str, Any]] = []
    for queue, tenant in sorted(set(counts) | set(hist)):
        c = counts.get((queue, tenant), [0, 0, 0, 0])
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
                    # Handler times are kept per slot only (the monitor shows recent ones).
                    "hist": hist.get((queue, tenant)) if s != TOTAL_SLOT else None,
                }
            )
    tx.many(
        "INSERT INTO {s}.metrics AS m (queue, tenant, slot, processed, failed, retried, "
        "dead_lettered, hist) VALUES (%(queue)s, %(tenant)s, %(slot)s, %(p)s, %(f)s, %(r)s, "
        "%(d)s, %(hist)s::bigint[]) ON CONFLICT (queue, tenant, slot) DO UPDATE SET "
        "processed = m.processed + excluded.processed, failed = m.failed + excluded.failed, "
        "retried = m.retried + excluded.retried, "
        "dead_lettered = m.dead_lettered + excluded.dead_lettered, "
        "hist = CASE WHEN excluded.hist IS NULL THEN m.hist WHEN m.hist IS NULL THEN excluded.hist "
        "ELSE ARRAY(SELECT COALESCE(a, 0) + COALESCE(b, 0) FROM unnest(m.hist, excluded.hist) "
        "WITH ORDINALITY AS u(a, b, i) ORDER BY i) END",
        rows,
    )
