"""The maintained counts behind ``stats()`` equal a recount after any sequence of operations."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import pmsq
from pmsq.backends.sqlite import counters
from pmsq.backends.sqlite.schema import SCHEMA_VERSION
from pmsq.testing import ManualClock

TENANTS = st.sampled_from([None, "acme", "blue"])
KEYS = st.sampled_from([None, "property:1", "property:2"])
QUEUES = st.sampled_from(["calendar", "email"])


class CountsMatchARecount(RuleBasedStateMachine):
    """Puts, claims, acks, retries, dead letters, releases, lapsed leases, redrive and purge."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.clock = ManualClock(1_000_000.0)
        self.broker = pmsq.connect(
            str(Path(self.dir.name) / "pms.db"), durability="memory", clock=self.clock
        )
        self.broker.declare_queue("calendar", max_attempts=2, lease=10.0)
        # A dead letter blocks its key here: redrive and purge move whole key lines.
        self.broker.declare_queue(
            "email", max_attempts=2, lease=10.0, on_key_failure="block", fallback="calendar"
        )
        self.held: list[pmsq.Delivery] = []

    def teardown(self) -> None:
        self.broker.close()
        self.dir.cleanup()

    @rule(
        queue=QUEUES,
        tenant=TENANTS,
        key=KEYS,
        delay=st.sampled_from([0, 0, 5.0]),
        n=st.integers(1, 3),
    )
    def put(self, queue: str, tenant: str | None, key: str | None, delay: float, n: int) -> None:
        q = self.broker.queue(queue) if tenant is None else self.broker.tenant(tenant).queue(queue)
        q.put_many([pmsq.NewMessage({"i": i}, key=key, delay=delay) for i in range(n)])

    @rule(queue=QUEUES, n=st.integers(1, 4))
    def claim(self, queue: str, n: int) -> None:
        self.held += self.broker.queue(queue).get_many(n, timeout=0)

    @precondition(lambda self: self.held)
    @rule(i=st.integers(0, 100), action=st.sampled_from(["ack", "retry", "dead", "release"]))
    def settle(self, i: int, action: str) -> None:
        d = self.held.pop(i % len(self.held))
        try:
            if action == "ack":
                d.ack()
            elif action == "retry":
                d.retry(delay=3.0)
            elif action == "dead":
                d.dead_letter("test")
            else:
                d.release()
        except pmsq.LeaseLost:
            pass  # its lease lapsed and another claim took it: nothing changes

    @rule(seconds=st.sampled_from([1.0, 4.0, 11.0]))
    def time_passes(self, seconds: float) -> None:
        # Past 10 s the leases lapse: the next claim takes them again (or buries them).
        self.clock.advance(seconds)

    @rule(queue=QUEUES)
    def redrive(self, queue: str) -> None:
        self.broker.dead_letters(queue).redrive()

    @rule(queue=QUEUES, some=st.booleans())
    def purge(self, queue: str, some: bool) -> None:
        dl = self.broker.dead_letters(queue)
        ids = [d.envelope.id for d in self.broker.backend.dead_letters(queue, limit=1)]
        dl.purge(ids if some else None)

    @invariant()
    def counts_equal_a_recount(self) -> None:
        conn: sqlite3.Connection = self.broker.backend._conn  # type: ignore[attr-defined]
        assert counters.read(conn, None, None) == counters.recount(conn)


TestCountsMatchARecount = CountsMatchARecount.TestCase
TestCountsMatchARecount.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


def test_a_store_from_before_the_counters_is_counted_when_it_migrates(tmp_path: Path) -> None:
    path = tmp_path / "pms.db"
    with pmsq.connect(str(path), durability="normal") as b:
        q = b.declare_queue("calendar", max_attempts=1)
        q.put_many([{"n": i} for i in range(5)])
        q.put({"n": "later"}, delay=60)
        q.get(timeout=0).dead_letter("boom")
        q.get(timeout=0)  # in flight
        before = b.stats("calendar")
    conn = sqlite3.connect(path, isolation_level=None)
    for name in ("insert", "delete", "update", "move"):
        conn.execute(f"DROP TRIGGER pmsq_tr_counts_{name}")
    conn.execute("DROP TABLE pmsq_counts")
    conn.execute("UPDATE pmsq_meta SET v = '3' WHERE k = 'schema_version'")
    conn.close()
    with pmsq.connect(str(path), durability="normal") as b:
        after = b.stats("calendar")
        assert (after.ready, after.delayed, after.in_flight, after.dead) == (3, 1, 1, 1)
        assert (after.ready, after.delayed, after.in_flight, after.dead) == (
            before.ready,
            before.delayed,
            before.in_flight,
            before.dead,
        )
        assert b.backend.get_meta("schema_version") == str(SCHEMA_VERSION) == "5"


def test_stats_reads_no_message_rows_beyond_an_index_seek(tmp_path: Path) -> None:
    # The plan of every statement stats() runs against pmsq_messages: a seek of
    # the waiting index, never a scan of the table or of a whole index.
    with pmsq.connect(str(tmp_path / "pms.db"), durability="memory") as b:
        b.queue("calendar").put({"n": 1})
        conn: sqlite3.Connection = b.backend._conn  # type: ignore[attr-defined]
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT MIN(enqueued_at) FROM pmsq_messages "
            "WHERE queue = ? AND tenant = ? AND state IN (0, 3)",
            ("calendar", ""),
        ).fetchall()
        detail = " ".join(r[-1] for r in plan)
        assert "pmsq_ix_waiting" in detail
        assert "SCAN" not in detail
        traced: list[str] = []
        conn.set_trace_callback(traced.append)
        try:
            b.stats()
        finally:
            conn.set_trace_callback(None)
        on_messages = [s for s in traced if "pmsq_messages" in s]
        assert on_messages
        assert all("MIN(enqueued_at)" in s and "queue = " in s for s in on_messages)
