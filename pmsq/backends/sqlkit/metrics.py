"""Outcome counters and the handler-time histogram, buffered per process.

Each backend counts settled outcomes here and writes the buffer, at most
about once a second, as upserts into per-10-second slots of its metrics
table (slot 0 holds the totals). A crash loses at most that second of
statistics, never a message. Only the upsert is dialect SQL.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from pmsq.stats import HISTOGRAM_BOUNDS_MS, WAIT_BOUNDS_MS

__all__ = ["SLOT_SECONDS", "TOTAL_SLOT", "Counts", "Metrics", "bucket", "slot_of"]

#: Width of one metrics slot, in seconds.
SLOT_SECONDS = 10
#: The slot that holds all-time totals.
TOTAL_SLOT = 0
_BUCKETS = len(HISTOGRAM_BOUNDS_MS) + 1
_WAIT_BUCKETS = len(WAIT_BOUNDS_MS) + 1

#: Buffered figures per ``(queue, stored tenant)``: ``[processed, failed,
#: retried, dead, put]`` counts, and histogram buckets (handler times, or
#: waits from due to first delivery).
Counts = dict[tuple[str, str], list[int]]


def bucket(ms: float, bounds: tuple[float, ...] = HISTOGRAM_BOUNDS_MS) -> int:
    """The histogram bucket of ``ms`` milliseconds (a handler time by default)."""
    for i, bound in enumerate(bounds):
        if ms <= bound:
            return i
    return len(bounds)


def slot_of(now: float) -> int:
    """The metrics slot that ``now`` falls in."""
    return int(now // SLOT_SECONDS)


class Metrics:
    """A thread-safe buffer of outcome counts per (queue, tenant)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counts = {}
        self._hist: Counts = {}
        self._waits: Counts = {}

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
        put: int = 0,
        duration_ms: float | None = None,
        wait_ms: float | None = None,
    ) -> None:
        """Count one outcome of ``queue``/``tenant`` (stored form).

        ``put`` counts messages stored, ``wait_ms`` the time a message
        waited from due to its first delivery.
        """
        with self._lock:
            c = self._counts.setdefault((queue, tenant), [0, 0, 0, 0, 0])
            c[0] += processed
            c[1] += failed
            c[2] += retried
            c[3] += dead
            c[4] += put
            if duration_ms is not None:
                h = self._hist.setdefault((queue, tenant), [0] * _BUCKETS)
                h[bucket(duration_ms)] += 1
            if wait_ms is not None:
                w = self._waits.setdefault((queue, tenant), [0] * _WAIT_BUCKETS)
                w[bucket(max(0.0, wait_ms), WAIT_BOUNDS_MS)] += 1

    def add_processed(self, done: Sequence[tuple[str, str, float | None]]) -> None:
        """Count acks ``(queue, tenant, duration_ms)``: :meth:`add` for a batch, one lock.

        Equal to ``add(queue, tenant, processed=1, duration_ms=ms)`` for each.
        """
        with self._lock:
            for queue, tenant, ms in done:
                c = self._counts.get((queue, tenant))
                if c is None:
                    c = self._counts[(queue, tenant)] = [0, 0, 0, 0, 0]
                c[0] += 1
                if ms is not None:
                    h = self._hist.get((queue, tenant))
                    if h is None:
                        h = self._hist[(queue, tenant)] = [0] * _BUCKETS
                    h[bucket(ms)] += 1

    def add_waits(self, queue: str, waits: dict[str, list[float]]) -> None:
        """Count first deliveries of ``queue``: the waits (ms) from due, per stored tenant.

        One lock for a whole claimed batch, instead of one ``add`` per message.
        """
        with self._lock:
            for tenant, values in waits.items():
                self._counts.setdefault((queue, tenant), [0, 0, 0, 0, 0])
                w = self._waits.setdefault((queue, tenant), [0] * _WAIT_BUCKETS)
                for ms in values:
                    w[bucket(max(0.0, ms), WAIT_BOUNDS_MS)] += 1

    def snapshot(self) -> tuple[Counts, Counts, Counts]:
        """The counts so far, for ``restore`` when a transaction is run again."""
        with self._lock:
            return (
                {k: list(v) for k, v in self._counts.items()},
                {k: list(v) for k, v in self._hist.items()},
                {k: list(v) for k, v in self._waits.items()},
            )

    def restore(self, saved: tuple[Counts, Counts, Counts]) -> None:
        """Go back to a ``snapshot``: the counts of a rolled-back transaction are dropped."""
        with self._lock:
            self._counts, self._hist, self._waits = saved

    def take(self) -> tuple[Counts, Counts, Counts]:
        """Remove and return everything buffered: ``(counts, handler times, waits)``."""
        with self._lock:
            taken = self._counts, self._hist, self._waits
            self._counts, self._hist, self._waits = {}, {}, {}
        return taken

    def give_back(self, counts: Counts, hist: Counts, waits: Counts) -> None:
        """Re-buffer what a failed write took, so the next one writes it."""
        with self._lock:
            for k, c in counts.items():
                mine = self._counts.setdefault(k, [0] * len(c))
                for i, n in enumerate(c):
                    mine[i] += n
            for source, into, size in (
                (hist, self._hist, _BUCKETS),
                (waits, self._waits, _WAIT_BUCKETS),
            ):
                for k, h in source.items():
                    mine = into.setdefault(k, [0] * size)
                    for i, n in enumerate(h):
                        mine[i] += n
