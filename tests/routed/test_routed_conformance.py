"""Two SQLite files behind one routed broker pass the whole conformance suite.

The routes split the suite's queues between the stores (``calendar``,
``payments.#``, ``any-words`` and ``b`` in the second file, the rest in the
first), so fan-out tests publish across stores and every verb is forwarded.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator

from hypothesis import settings

import pmsq
from pmsq.testing import BrokerConformance, ManualClock

SECOND = ("calendar", "payments.#", "any-words", "b")


class TestTwoSQLiteStores(BrokerConformance):
    """The default store ``main.db`` and ``second.db``."""

    # Every example opens two files: fewer long-run examples keep it inside the timeout.
    stateful_settings_slow = settings(BrokerConformance.stateful_settings_slow, max_examples=400)

    def make_broker(self, clock: ManualClock) -> pmsq.Broker:
        second = str(self.tmp_path / "second.db")
        return pmsq.connect(
            str(self.tmp_path / "main.db"),
            routes=dict.fromkeys(SECOND, second),
            clock=clock,
            durability="normal",
        )

    @contextlib.contextmanager
    def _app_transaction(self, commit: bool) -> Iterator[sqlite3.Connection]:
        # The suite's outbox queue lives in the default store: the app's connection is there.
        conn = sqlite3.connect(str(self.tmp_path / "main.db"), isolation_level=None)
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
