"""SQLite specifics of schedules: the schema migration, and racing processes' firings."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pmsq
from pmsq.backends.sqlite.schema import SCHEMA_VERSION


def test_a_version_2_store_gains_the_schedules_table(tmp_path: Path) -> None:
    db = tmp_path / "pms.db"
    with pmsq.connect(str(db), durability="normal") as b:
        mid = b.queue("q").put("before the upgrade")
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TABLE pmsq_schedules")
    conn.execute("UPDATE pmsq_meta SET v = '2' WHERE k = 'schema_version'")
    conn.close()
    clock = pmsq.ManualClock()
    with pmsq.connect(str(db), durability="normal", clock=clock) as b:
        assert b.backend.get_meta("schema_version") == str(SCHEMA_VERSION) == "5"
        b.schedule("s", queue="q", every=5.0)
        clock.advance(5.0)
        assert b.run_schedules() == 1
        assert {m.message.id for m in b.queue("q").get_many(10, timeout=0)} >= {mid}


def test_a_stale_plan_loses_its_compare_and_set(tmp_path: Path) -> None:
    """A broker whose plan was made from an older version makes nothing (no message, no cursor)."""
    clock = pmsq.ManualClock()
    with pmsq.connect(str(tmp_path / "pms.db"), clock=clock) as b:
        b.declare_queue("q")
        b.schedule("s", queue="q", every=10.0)
        clock.advance(10.0)
        store = b.backend
        (due,) = store.due_schedules(clock.time())  # type: ignore[attr-defined]
        from pmsq.schedules.service import _firing

        stale = _firing(b, due, clock.time())
        assert b.run_schedules() == 1
        assert store.fire_schedules([stale], now=clock.time()) == [0]  # type: ignore[attr-defined]
        assert len(b.queue("q").get_many(10, timeout=0)) == 1
