"""SQLite specifics of message control: the version 5 migration; the cost of pauses to a claim."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pmsq
from pmsq.backends.sqlite import pauses
from pmsq.backends.sqlite.schema import SCHEMA_VERSION


def test_a_version_4_store_gains_expiry_and_pauses_and_keeps_its_messages(tmp_path: Path) -> None:
    path = tmp_path / "pms.db"
    with pmsq.connect(str(path), durability="normal") as b:
        mids = b.queue("q").put_many(["a", "b"])
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TABLE pmsq_pauses")
    conn.execute("DROP TABLE pmsq_failures")
    conn.execute("ALTER TABLE pmsq_messages DROP COLUMN expires_at")
    conn.execute("UPDATE pmsq_meta SET v = '4' WHERE k = 'schema_version'")
    conn.close()
    clock = pmsq.ManualClock()
    with pmsq.connect(str(path), durability="normal", clock=clock) as b:
        assert b.backend.get_meta("schema_version") == str(SCHEMA_VERSION)
        q = b.queue("q")
        q.put("c", expires=5.0)
        b.pause("q", reason="after the upgrade")
        assert q.get_many(10, timeout=0) == []
        assert b.resume("q") is True
        clock.advance(6.0)
        assert [d.message.id for d in q.get_many(10, timeout=0)] == mids
        assert [dl.reason for dl in b.dead_letters("q").list()] == ["expired"]


def test_a_claim_reads_pauses_with_one_primary_key_seek(tmp_path: Path) -> None:
    # The one statement pauses add to a claim must stay a seek on the queue,
    # whatever other queues have paused.
    with pmsq.connect(str(tmp_path / "pms.db"), durability="memory") as b:
        for i in range(50):
            b.pause(f"other-{i}", reason="noise")
        conn = b.backend._conn  # type: ignore[attr-defined]
        seen: list[str] = []
        conn.set_trace_callback(seen.append)
        try:
            assert pauses.load_holds(conn, "q", 0.0) is None
        finally:
            conn.set_trace_callback(None)
        (statement,) = seen
        plan = " ".join(str(r[3]) for r in conn.execute(f"EXPLAIN QUERY PLAN {statement}"))
    assert "USING PRIMARY KEY (queue=?)" in plan, plan
