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
    """Every path that moves a message between the counted kinds.

    Puts (coalesced, expiring), claims (and expiry at claim), acks, retries,
    snoozes, dead letters (and their fallback copies), releases, extends of
    lapsed leases, lapsed leases, cancel by id and by key, reschedule,
    redrive, purge, and an import from another store. Since schema version 7
    the code counts each of them itself (no trigger catches a path it misses).
    """

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
        self.ids: list[tuple[str, str | None, str]] = []  # (queue, tenant, id) put
        self.imports = 0

    def teardown(self) -> None:
        self.broker.close()
        self.dir.cleanup()

    def _queue(self, queue: str, tenant: str | None) -> pmsq.Queue:
        return (
            self.broker.queue(queue) if tenant is None else self.broker.tenant(tenant).queue(queue)
        )

    @rule(
        queue=QUEUES,
        tenant=TENANTS,
        key=KEYS,
        delay=st.sampled_from([0, 0, 5.0]),
        n=st.integers(1, 3),
    )
    def put(self, queue: str, tenant: str | None, key: str | None, delay: float, n: int) -> None:
        q = self._queue(queue, tenant)
        ids = q.put_many([pmsq.NewMessage({"i": i}, key=key, delay=delay) for i in range(n)])
        self.ids += [(queue, tenant, i) for i in ids]

    @rule(
        queue=QUEUES,
        tenant=TENANTS,
        key=KEYS,
        coalesce=st.booleans(),
        expires=st.sampled_from([None, 2.0]),
    )
    def put_one(
        self, queue: str, tenant: str | None, key: str | None, coalesce: bool, expires: float | None
    ) -> None:
        # Coalescing rewrites a waiting message; an expiring one may be buried at claim.
        mid = self._queue(queue, tenant).put(
            {"one": True}, key=key, coalesce=coalesce and key is not None, expires=expires
        )
        self.ids.append((queue, tenant, mid))

    @precondition(lambda self: self.ids)
    @rule(i=st.integers(0, 100), delay=st.sampled_from([0.0, 6.0]))
    def reschedule(self, i: int, delay: float) -> None:
        queue, tenant, mid = self.ids[i % len(self.ids)]
        self._queue(queue, tenant).reschedule(mid, delay=delay)

    @precondition(lambda self: self.ids)
    @rule(i=st.integers(0, 100), n=st.integers(1, 3))
    def cancel_ids(self, i: int, n: int) -> None:
        queue, tenant, _ = self.ids[i % len(self.ids)]
        chosen = [m for q, t, m in self.ids[i % len(self.ids) :][:n] if (q, t) == (queue, tenant)]
        self._queue(queue, tenant).cancel(chosen)

    @rule(queue=QUEUES, tenant=TENANTS, key=st.sampled_from(["property:1", "property:2"]))
    def cancel_key(self, queue: str, tenant: str | None, key: str) -> None:
        self._queue(queue, tenant).cancel(key=key)

    @rule()
    def import_copy(self) -> None:
        # What a migration (pmsq migrate) writes: another store's export, taken in.
        self.imports += 1
        path = str(Path(self.dir.name) / f"other{self.imports}.db")
        with pmsq.connect(path, durability="memory", clock=self.clock) as other:
            q = other.declare_queue("email", max_attempts=1)
            q.put({"from": "other"}, key="property:1")  # exported in flight
            q.put({"from": "other"}, key="property:1")  # waiting behind it
            q.put({"from": "other"}, delay=5.0)
            q.put({"from": "other"}, key="property:2")  # dead, blocking its key
            q.get(timeout=0)
            q.get(timeout=0).dead_letter("gone")
            records, _ = other.backend.export_messages("email")
        self.broker.backend.import_messages(records, now=self.clock.time())

    @rule(queue=QUEUES, n=st.integers(1, 4))
    def claim(self, queue: str, n: int) -> None:
        self.held += self.broker.queue(queue).get_many(n, timeout=0)

    @precondition(lambda self: self.held)
    @rule(
        i=st.integers(0, 100),
        action=st.sampled_from(["ack", "retry", "dead", "release", "snooze", "extend"]),
    )
    def settle(self, i: int, action: str) -> None:
        d = self.held.pop(i % len(self.held))
        try:
            if action == "ack":
                d.ack()
            elif action == "retry":
                d.retry(delay=3.0)
            elif action == "dead":
                d.dead_letter("test")
            elif action == "snooze":
                d.snooze(3.0)
            elif action == "extend":
                # A lapsed lease nobody claimed since is taken back (ready to in flight).
                d.extend(10.0)
                self.held.append(d)
            else:
                d.release()
        except pmsq.LeaseLost:
            pass  # its lease lapsed and another claim took it, or it was cancelled

    @rule(seconds=st.sampled_from([1.0, 4.0, 11.0]))
    def time_passes(self, seconds: float) -> None:
        # Past 10 s the leases lapse: the next claim takes them again (or buries them).
        self.clock.advance(seconds)

    @rule(queue=QUEUES, on=st.booleans())
    def pause(self, queue: str, on: bool) -> None:
        # A claim of a paused queue still settles lapsed leases but leases
        # nothing: the message waits ready with its old token, which an
        # extend may take back.
        if on:
            self.broker.pause(queue)
        else:
            self.broker.resume(queue)

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
        conn.execute(f"DROP TRIGGER IF EXISTS pmsq_tr_counts_{name}")
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
        assert b.backend.get_meta("schema_version") == str(SCHEMA_VERSION)


def test_a_store_counted_by_triggers_loses_them_and_is_recounted(tmp_path: Path) -> None:
    # Schema 6 kept the counts with triggers; version 7 counts in the code.
    # A trigger left behind would count every change twice.
    path = tmp_path / "pms.db"
    with pmsq.connect(str(path), durability="normal") as b:
        q = b.declare_queue("calendar", max_attempts=1)
        q.put_many([pmsq.NewMessage({"n": i}, key="property:1") for i in range(3)])
        q.put({"n": "later"}, delay=60)
        q.get(timeout=0)
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in counters.COUNTERS_DDL[1:5]:  # the version-4 triggers
        conn.execute(statement)
    conn.execute("UPDATE pmsq_counts SET ready = ready + 7")  # drifted: recounted
    conn.execute("UPDATE pmsq_meta SET v = '6' WHERE k = 'schema_version'")
    conn.close()
    with pmsq.connect(str(path), durability="normal") as b:
        conn = b.backend._conn  # type: ignore[attr-defined]
        names = conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall()
        assert names == []
        assert counters.read(conn, None, None) == counters.recount(conn)
        d = b.queue("calendar").get_many(1, timeout=0)
        assert d == []  # the key's head is in flight; the rest wait behind it
        s = b.stats("calendar")
        assert (s.ready, s.delayed, s.in_flight, s.dead) == (0, 3, 1, 0)
        assert b.backend.get_meta("schema_version") == str(SCHEMA_VERSION)


def test_stats_reads_no_message_rows_beyond_an_index_seek(tmp_path: Path) -> None:
    # The plan of every statement stats() runs against pmsq_messages: a seek of
    # the due index, never a scan of the table or of a whole index.
    with pmsq.connect(str(tmp_path / "pms.db"), durability="memory") as b:
        b.queue("calendar").put({"n": 1})
        conn: sqlite3.Connection = b.backend._conn  # type: ignore[attr-defined]
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT MIN(available_at) FROM pmsq_messages "
            "WHERE queue = ? AND tenant = ? AND state IN (0, 3) AND available_at <= ?",
            ("calendar", "", 1e12),
        ).fetchall()
        detail = " ".join(r[-1] for r in plan)
        assert "pmsq_ix_due" in detail
        assert "SCAN" not in detail
        traced: list[str] = []
        conn.set_trace_callback(traced.append)
        try:
            b.stats()
        finally:
            conn.set_trace_callback(None)
        on_messages = [s for s in traced if "pmsq_messages" in s]
        assert on_messages
        assert all("MIN(available_at)" in s and "queue = " in s for s in on_messages)


def test_an_extend_takes_back_a_lapsed_lease_and_counts_it_in_flight(tmp_path: Path) -> None:
    # The rarest path for the stateful test to find: a lease lapses, a claim of
    # the paused queue settles that (the message is ready again, its token
    # kept), and the late holder's extend takes it back.
    clock = ManualClock(1_000_000.0)
    with pmsq.connect(str(tmp_path / "pms.db"), durability="memory", clock=clock) as b:
        q = b.declare_queue("calendar", max_attempts=3, lease=10.0)
        q.put({"n": 1})
        d = q.get(timeout=0)
        clock.advance(11.0)
        b.pause("calendar")
        assert q.get_many(1, timeout=0) == []
        conn: sqlite3.Connection = b.backend._conn  # type: ignore[attr-defined]
        assert counters.read(conn, None, None) == {("calendar", ""): (1, 0, 0, 0)}
        d.extend(10.0)
        assert counters.read(conn, None, None) == {("calendar", ""): (0, 0, 1, 0)}
        assert counters.read(conn, None, None) == counters.recount(conn)
