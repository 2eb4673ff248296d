"""Per-minute history of a queue's outcomes, for the dashboard's charts.

The store keeps its outcome counters in 10-second slots for an hour
(``pmsq.backends.sqlkit.metrics``); here they are folded into one point per
minute. Only a SQLite store is read (through a read-only connection of its
own, so a chart never waits behind the broker's lock); other backends get no
history, and the dashboard shows the current figures without charts.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from typing import Any

import attrs

from pmsq.backends.sqlkit.metrics import SLOT_SECONDS, TOTAL_SLOT
from pmsq.stats import percentile_from_histogram

__all__ = ["MINUTES", "Series", "read_series"]

#: Minutes of history charted (the store keeps an hour of slots).
MINUTES = 60


@attrs.frozen
class Series:
    """One point per minute, oldest first; the last point is the minute in progress.

    Attributes:
        processed: Acks per minute.
        failed: Failed deliveries per minute.
        p95_ms: 95th percentile handler time per minute (``None`` without acks).
    """

    processed: tuple[int, ...]
    failed: tuple[int, ...]
    p95_ms: tuple[float | None, ...]

    @property
    def empty(self) -> bool:
        """Nothing finished in the whole period."""
        return not any(self.processed) and not any(self.failed)


def _fold(rows: list[Any], now: float, minutes: int) -> dict[tuple[str, str], Series]:
    last = int(now // 60)
    work: dict[tuple[str, str], tuple[list[int], list[int], list[list[int]]]] = {}
    for queue, tenant, slot, processed, failed, hist in rows:
        index = minutes - 1 - (last - int(slot * SLOT_SECONDS // 60))
        if not 0 <= index < minutes:
            continue
        for key in ((queue, ""), (queue, tenant)) if tenant else ((queue, ""),):
            done, bad, hists = work.setdefault(
                key, ([0] * minutes, [0] * minutes, [[] for _ in range(minutes)])
            )
            done[index] += processed
            bad[index] += failed
            if hist:
                h = hists[index]
                counts = json.loads(hist)
                h.extend([0] * (len(counts) - len(h)))
                for i, c in enumerate(counts):
                    h[i] += c
    return {
        key: Series(
            processed=tuple(done),
            failed=tuple(bad),
            p95_ms=tuple(percentile_from_histogram(h, 0.95) for h in hists),
        )
        for key, (done, bad, hists) in work.items()
    }


def read_series(
    backend: object, now: float, *, tenant: str | None = None, minutes: int = MINUTES
) -> dict[tuple[str, str], Series] | None:
    """Per-minute series by ``(queue, tenant)``; ``tenant`` ``""`` is the queue's total.

    Args:
        backend: The broker's backend.
        now: The time of the last point (epoch seconds).
        tenant: Only this tenant's figures (the totals then are this tenant's).
        minutes: How many points.

    Returns:
        The series of the queues that finished anything in the period, or
        ``None`` when the backend keeps no readable history.
    """
    from pmsq.backends.sqlite import SQLiteBackend
    from pmsq.backends.sqlite.files import readonly_uri

    if not isinstance(backend, SQLiteBackend) or ":memory:" in backend.path:
        return None
    path = backend.path

    first = int((now // 60 - minutes + 1) * 60 // SLOT_SECONDS)
    sql = (
        "SELECT queue, tenant, slot, processed, failed, hist FROM pmsq_metrics "
        f"WHERE slot != {TOTAL_SLOT} AND slot >= ?"
    )
    args: list[Any] = [first]
    if tenant is not None:
        sql += " AND tenant = ?"
        args.append(tenant)
    try:
        conn = sqlite3.connect(readonly_uri(path), uri=True, timeout=5.0)
    except sqlite3.Error:
        return None
    try:
        rows = conn.execute(sql, args).fetchall()
    except sqlite3.Error:
        return None
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.close()
    return _fold(rows, now, minutes)
