"""A backend of the required verbs only passes the suite, refusing every family clearly.

``BareSQLite`` keeps a SQLite store but implements no family and none of the
optional methods: the settlement conveniences, ``queue_config``,
``ensure_queue``, ``wait_for_change`` and ``ready_queues`` all run on the
interface's defaults, and every family test checks the refusal.
"""

from __future__ import annotations

import pmsq
from backends._bare import BareSQLite
from pmsq.testing import BrokerConformance, ManualClock


class TestBareBackend(BrokerConformance):
    def make_broker(self, clock: ManualClock) -> pmsq.Broker:
        store = BareSQLite(str(self.tmp_path / "bare.db"), durability="memory")
        return pmsq.Broker(store, clock=clock)
