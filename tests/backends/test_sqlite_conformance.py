"""The SQLite backend runs the conformance suite of ``pmsq.testing``: on a file, and in memory."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator

import pmsq
from pmsq.testing import BrokerConformance, ManualClock


class TestSQLite(BrokerConformance):
    """A file store; durability "normal" keeps the suite fast (crash-safe, not power-safe)."""

    def make_broker(self, clock: ManualClock) -> pmsq.Broker:
        return pmsq.connect(str(self.tmp_path / "pms.db"), clock=clock, durability="normal")

    @contextlib.contextmanager
    def _app_transaction(self, commit: bool) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(str(self.tmp_path / "pms.db"), isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("CREATE TABLE IF NOT EXISTS bookings (id INTEGER PRIMARY KEY)")
            conn.execute("INSERT INTO bookings DEFAULT VALUES")
            yield conn
            conn.execute("COMMIT" if commit else "ROLLBACK")
        finally:
            conn.close()

    def app_transaction(self, broker: pmsq.Broker, *, commit: bool) -> object:
        return self._app_transaction(commit)


class TestSQLiteInMemory(BrokerConformance):
    """``:memory:`` with durability "memory": the store lives as long as its broker."""

    reopens = False

    def make_broker(self, clock: ManualClock) -> pmsq.Broker:
        return pmsq.connect(":memory:", clock=clock, durability="memory")
