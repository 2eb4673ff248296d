"""Work that rides along with write transactions: buffered metrics and pruning.

Outcome counts are buffered and written at most once a second inside some
write transaction: one upsert per second instead of four per ack. A crash
loses at most that second of statistics, never a message. Time-gated
pruning keeps the dedup, metrics and journal tables bounded without adding
work to every put.
"""

from __future__ import annotations

import sqlite3
import time

from pmsq.backends.sqlite import journal, metrics
from pmsq.backends.sqlite.journal import Journal
from pmsq.backends.sqlkit.metrics import TOTAL_SLOT, Metrics, slot_of

__all__ = ["HOUSEKEEPING_EVERY", "Upkeep"]

#: Seconds between two rounds of pruning.
HOUSEKEEPING_EVERY = 30.0


class Upkeep:
    """Flushes ``counts`` and prunes old rows, each at most as often as it should.

    Args:
        counts: The outcome counts buffered by this process.
        log: The journal (its retention decides what is pruned).
    """

    def __init__(self, counts: Metrics, log: Journal) -> None:
        self._counts = counts
        self._journal = log
        self._flushed = time.monotonic()
        self._last_round = 0.0
        self._pruning_behind = False

    def after_batch(self, conn: sqlite3.Connection, now: float) -> None:
        """What to do at the end of a group-commit transaction."""
        self.flush_metrics(conn, now)
        self.housekeeping(conn, now)

    def flush_metrics(self, conn: sqlite3.Connection, now: float, *, force: bool = False) -> None:
        """Write the buffered counts if a second has passed (or ``force``)."""
        mono = time.monotonic()
        if self._counts and (force or mono - self._flushed >= 1.0):
            counts, hist, waits = self._counts.take()
            try:
                metrics.write(conn, counts, hist, waits, now)
            except BaseException:
                self._counts.give_back(counts, hist, waits)  # for the next transaction
                raise
            self._flushed = mono

    def housekeeping(self, conn: sqlite3.Connection, now: float) -> None:
        """Prune expired dedup ids, old metrics slots and old journal rows, when due."""
        mono = time.monotonic()
        if mono - self._last_round < HOUSEKEEPING_EVERY:
            if self._pruning_behind:
                self._prune_journal(conn, now)
            return
        self._last_round = mono
        self._prune_journal(conn, now)
        conn.execute(
            "DELETE FROM pmsq_dedup WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
        )
        conn.execute(
            f"DELETE FROM pmsq_metrics WHERE slot != {TOTAL_SLOT} AND slot < ?",
            (slot_of(now - 3600),),
        )

    def _prune_journal(self, conn: sqlite3.Connection, now: float) -> None:
        # A bounded batch per pass; a pass that filled its batch (the journal
        # grows faster than one batch per pass) asks for another at the next
        # put commit instead of waiting for the next housekeeping round.
        if self._journal.retention is None:
            return
        deleted = journal.prune(conn, now - self._journal.retention)
        self._pruning_behind = deleted >= journal.PRUNE_BATCH
