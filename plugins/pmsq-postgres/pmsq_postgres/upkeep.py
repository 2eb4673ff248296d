"""Work done beside the messages: writing buffered metrics and pruning old rows.

Outcome counts are added after each committed settlement and written at
most about once a second, in a short transaction of their own. Time-gated
pruning keeps the dedup, metrics and keys tables bounded without adding
work to every put; it skips locked rows, so it never waits on, or
deadlocks with, the transactions it cleans up after.
"""

from __future__ import annotations

import contextlib
import threading
import time

from pmsq.backends.sqlkit.metrics import TOTAL_SLOT, Metrics, slot_of
from pmsq.errors import PmsqError
from pmsq_postgres import metrics
from pmsq_postgres.runner import Runner
from pmsq_postgres.tx import Tx

__all__ = ["HOUSEKEEPING_EVERY", "Upkeep"]

#: Seconds between two rounds of pruning.
HOUSEKEEPING_EVERY = 30.0


class Upkeep:
    """Flushes ``counts`` and prunes old rows through ``runner``, each when due."""

    def __init__(self, runner: Runner, counts: Metrics) -> None:
        self._runner = runner
        self._counts = counts
        self._flush_lock = threading.Lock()
        self._flushed = time.monotonic()
        self._last_round = 0.0

    def flush_metrics(self, now: float, *, force: bool = False) -> None:
        """Write the buffered counts if a second has passed (or ``force``)."""
        if not self._counts:
            return
        with self._flush_lock:
            mono = time.monotonic()
            if not force and mono - self._flushed < 1.0:
                return
            self._flushed = mono
            counts, hist, waits = self._counts.take()
            if not counts and not hist and not waits:
                return
            try:
                self._runner.run(
                    lambda tx: metrics.write(tx, counts, hist, waits, now), relaxed=True
                )
            except BaseException:
                self._counts.give_back(counts, hist, waits)
                raise

    def housekeeping(self, now: float) -> None:
        """Prune expired dedup ids, empty key rows and old metrics slots, when due."""
        mono = time.monotonic()
        if mono - self._last_round < HOUSEKEEPING_EVERY:
            return
        self._last_round = mono
        oldest_slot = slot_of(now - 3600)

        def go(tx: Tx) -> None:
            tx.execute(
                "DELETE FROM {s}.dedup WHERE ctid IN (SELECT ctid FROM {s}.dedup "
                "WHERE expires_at <= %s LIMIT 10000 FOR UPDATE SKIP LOCKED)",
                (now,),
            )
            tx.execute(
                "DELETE FROM {s}.keys WHERE ctid IN (SELECT ctid FROM {s}.keys WHERE live = 0 "
                "LIMIT 10000 FOR UPDATE SKIP LOCKED)"
            )
            tx.execute(
                "DELETE FROM {s}.metrics WHERE ctid IN (SELECT ctid FROM {s}.metrics "
                f"WHERE slot != {TOTAL_SLOT} AND slot < %s LIMIT 10000 FOR UPDATE SKIP LOCKED)",
                (oldest_slot,),
            )

        with contextlib.suppress(PmsqError):
            self._runner.run(go, relaxed=True)
