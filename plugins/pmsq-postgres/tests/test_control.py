"""Message control on PostgreSQL: what the shared suite cannot see.

Several brokers (each its own pool, as several hosts) racing on pauses and
circuit probes, cancels in the app's psycopg transaction, NOTIFY and
readiness when a pause lifts, and the schema step from a version-2 store.
The semantics shared with SQLite are in ``test_conformance.py``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from pmsq_postgres import PostgresBackend
from pmsq_postgres.schema import SCHEMA_VERSION

import pmsq
from pmsq.clock import ManualClock

Connect = Callable[..., pmsq.Broker]


def backend(b: pmsq.Broker) -> PostgresBackend:
    assert isinstance(b.backend, PostgresBackend)
    return b.backend


def _fail(_: pmsq.Message) -> None:
    raise RuntimeError("channel API down")


# -- pauses and circuits across brokers ----------------------------------------------------


def test_a_pause_set_by_one_broker_holds_claims_of_another(connect: Connect) -> None:
    a, b = connect(), connect()
    a.queue("sync").put_many([pmsq.NewMessage({"n": i}, key=f"k{i}") for i in range(4)])
    a.pause("sync", key="k1", reason="OTA maintenance")
    got = b.queue("sync").get_many(10, timeout=0)
    assert sorted(d.message.payload["n"] for d in got) == [0, 2, 3]
    for d in got:
        d.ack()
    assert b.queue("sync").get_many(10, timeout=0) == []
    assert a.resume("sync", key="k1") is True
    assert [d.message.payload["n"] for d in b.queue("sync").get_many(10, timeout=0)] == [1]


def test_many_tenants_paused_do_not_starve_the_others(connect: Connect) -> None:
    # Claims rotate over a window of tenants; paused ones must not fill it.
    broker = connect()
    q = broker.queue("sync")
    for i in range(40):
        q.put({"t": i}, tenant=f"t{i:02d}")
    for i in range(38):
        broker.pause("sync", tenant=f"t{i:02d}")
    got = q.get_many(10, timeout=0)
    assert sorted(d.message.tenant for d in got) == ["t38", "t39"]


def test_concurrent_claims_on_a_half_open_circuit_take_one_probe(
    connect: Connect, clock: ManualClock
) -> None:
    brokers = [connect() for _ in range(4)]
    circuit = pmsq.Circuit(failures=1, within=60.0, open_for=30.0)
    q = brokers[0].declare_queue("ota", circuit=circuit, max_attempts=10)
    q.put_many([pmsq.NewMessage({"n": i}) for i in range(20)])
    with pytest.raises(RuntimeError), q.get(timeout=0):
        raise RuntimeError("channel API down")
    assert [p.circuit for p in brokers[0].pauses()] == [True]
    assert brokers[1].queue("ota").get_many(5, timeout=0) == []
    clock.advance(31.0)
    barrier = threading.Barrier(len(brokers))

    def claim(b: pmsq.Broker) -> int:
        barrier.wait()
        return len(b.queue("ota").get_many(5, timeout=0))

    with ThreadPoolExecutor(len(brokers)) as pool:
        taken = list(pool.map(claim, brokers))
    assert sum(taken) == 1, taken
    assert backend(brokers[0]).check() == []


def test_concurrent_failures_open_the_circuit_once(connect: Connect, clock: ManualClock) -> None:
    brokers = [connect() for _ in range(4)]
    circuit = pmsq.Circuit(failures=4, within=60.0, open_for=30.0)
    q = brokers[0].declare_queue("ota", circuit=circuit, max_attempts=10)
    q.put_many([pmsq.NewMessage({"n": i}) for i in range(8)])
    held = [b.queue("ota").get(timeout=0) for b in brokers]
    barrier = threading.Barrier(len(brokers))

    def fail(d: pmsq.Delivery) -> None:
        barrier.wait()
        with pytest.raises(RuntimeError), d:
            raise RuntimeError("channel API down")

    with ThreadPoolExecutor(len(brokers)) as pool:
        list(pool.map(fail, held))
    pauses = brokers[0].pauses()
    assert [(p.circuit, p.reason) for p in pauses] == [
        (True, "circuit open: RuntimeError: channel API down")
    ]
    with psycopg.connect(backend(brokers[0]).url.split("?")[0]) as conn:
        rows = conn.execute(
            f'SELECT count(*) FROM "{backend(brokers[0]).schema}".failures'
        ).fetchone()
    assert rows == (0,)  # the count starts afresh once open


# -- cancel in the app's transaction ----------------------------------------------------------


def test_cancel_commits_and_rolls_back_with_the_app(broker: pmsq.Broker, pg_url: str) -> None:
    q = broker.queue("reminders")
    mids = [q.put({"n": i}, key="booking:8812") for i in range(3)]
    with psycopg.connect(pg_url.split("?")[0]) as app:
        assert q.cancel(key="booking:8812", connection=app) == 3
        app.rollback()
    assert len(q.peek(10)) == 3
    with psycopg.connect(pg_url.split("?")[0]) as app:
        assert q.cancel(mids[0], connection=app) is True
        # Not yet committed: a consumer still sees the key's head as it was.
        assert len(broker.queue("reminders").peek(10)) == 3
        app.commit()
    got = q.get_many(10, timeout=0)
    assert [d.message.id for d in got] == [mids[1]]
    assert backend(broker).check() == []


def test_cancel_refuses_a_connection_to_another_database(
    broker: pmsq.Broker, pg_server: object
) -> None:
    url = pg_server.url  # type: ignore[attr-defined]
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS pmsq_other_ctl")
        admin.execute("CREATE DATABASE pmsq_other_ctl")
    other = url.rsplit("/", 1)[0] + "/pmsq_other_ctl"
    mid = broker.queue("q").put({"n": 1})
    with psycopg.connect(other) as app, pytest.raises(pmsq.ConfigurationError):
        broker.queue("q").cancel(mid, connection=app)
    assert len(broker.queue("q").peek(5)) == 1


# -- wake-ups -------------------------------------------------------------------------------


def test_readiness_skips_a_paused_queue_and_names_when_the_pause_lifts(
    broker: pmsq.Broker, clock: ManualClock
) -> None:
    broker.queue("sync").put({"n": 1})
    be = backend(broker)
    now = clock.time()
    assert "sync" in be.ready_queues(["sync"], now=now).queues
    broker.pause("sync", until=now + 120.0, reason="OTA maintenance")
    readiness = be.ready_queues(["sync"], now=now)
    assert "sync" not in readiness.queues
    assert readiness.next_due == pytest.approx(now + 120.0)
    assert "sync" in be.ready_queues(["sync"], now=now + 121.0).queues


def test_a_resume_from_another_broker_wakes_a_waiting_consumer(connect: Connect) -> None:
    consumer, operator = connect(notify=True), connect(notify=True)
    operator.queue("sync").put({"n": 1})
    operator.pause("sync", reason="OTA maintenance")
    be = backend(consumer)
    be.wait_for_change(None, 0)  # starts listening
    since = be.wait_for_change(None, 0)
    woke: list[object] = []
    t = threading.Thread(target=lambda: woke.append(be.wait_for_change(since, 60.0)))
    t.start()
    operator.resume("sync")
    t.join(timeout=30)
    assert not t.is_alive(), "the NOTIFY of the resume did not end the wait"
    assert len(consumer.queue("sync").get_many(5, timeout=0)) == 1


# -- the schema step ------------------------------------------------------------------------


def test_a_version_2_store_gains_control_and_keeps_its_messages(
    connect: Connect, pg_url: str, schema: str
) -> None:
    first = connect()
    mid = first.queue("q").put({"n": 1}, key="k")
    first.close()
    with psycopg.connect(pg_url.split("?")[0], autocommit=True) as conn:
        conn.execute(f'DROP TABLE "{schema}".pauses, "{schema}".failures')
        conn.execute(f'ALTER TABLE "{schema}".messages DROP COLUMN expires_at')
        conn.execute(f"UPDATE \"{schema}\".meta SET v = '2' WHERE k = 'schema_version'")
    again = connect()
    assert backend(again).get_meta("schema_version") == str(SCHEMA_VERSION)  # every step ran
    again.pause("q", key="k")
    assert again.queue("q").get_many(5, timeout=0) == []
    again.resume("q", key="k")
    assert [d.message.id for d in again.queue("q").get_many(5, timeout=0)] == [mid]


def test_a_reschedule_ends_a_lease_that_expired_unclaimed(
    broker: pmsq.Broker, clock: ManualClock
) -> None:
    # A ready row keeps the token of a lease that ran out with nobody claiming
    # the message since; moving the message must take that lease away.
    q = broker.declare_queue("q", lease=10.0)
    late = q.put({"n": 1})
    d = q.get(timeout=0)
    assert d.message.id == late
    other = q.put({"n": 2}, priority=5)  # claimed before the expired one
    clock.advance(11.0)
    assert [x.message.id for x in q.get_many(1, timeout=0)] == [other]  # expires the lease
    assert q.reschedule(late, delay=0.0) is True
    with pytest.raises(pmsq.LeaseLost):
        d.ack()
    assert [x.message.id for x in q.get_many(5, timeout=0)] == [late]


def test_a_timed_pause_holds_while_the_clock_is_before_its_until(
    broker: pmsq.Broker, clock: ManualClock
) -> None:
    # A lapsed pause is not deleted: read at each claim, it is in force again
    # for a clock stepped back (several hosts whose clocks differ slightly).
    start = clock.time()
    q = broker.queue("sync")
    first = q.put({"n": 1})
    broker.pause("sync", until=start + 5.0)
    assert q.get_many(5, timeout=0) == []
    clock.advance(6.0)
    assert [d.message.id for d in q.get_many(5, timeout=0)] == [first]
    assert broker.pauses() == []
    q.put({"n": 2})
    clock.set(start + 2.0)
    assert q.get_many(5, timeout=0) == []
    assert broker.resume("sync") is True


def test_cancels_racing_with_consumers_and_producers_keep_the_key_lines(
    connect: Connect, clock: ManualClock
) -> None:
    # Cancels lock key rows in the other order from acks; PostgreSQL may pick a
    # deadlock victim, which is run again. Whatever the interleaving, the lines
    # stay consistent, a cancelled message is never acked, and every message is
    # exactly one of: acked, cancelled, still waiting.
    brokers = [connect() for _ in range(4)]
    keys = [f"booking:{i}" for i in range(8)]
    q0 = brokers[0].queue("reminders")
    put = q0.put_many([pmsq.NewMessage({"n": n}, key=k) for n in range(6) for k in keys])
    lock = threading.Lock()
    acked: list[str] = []
    stop = threading.Event()

    def consume(b: pmsq.Broker) -> None:
        while not stop.is_set():
            for d in b.queue("reminders").get_many(4, timeout=0):
                with contextlib.suppress(pmsq.LeaseLost):
                    d.ack()
                    with lock:
                        acked.append(d.message.id)

    def produce() -> None:
        for n in range(6, 12):
            ids = q0.put_many([pmsq.NewMessage({"n": n}, key=k) for k in keys])
            with lock:
                put.extend(ids)

    threads = [threading.Thread(target=consume, args=(b,)) for b in brokers[1:]]
    threads.append(threading.Thread(target=produce))
    for t in threads:
        t.start()
    removed: list[str] = []
    for k in keys[:4]:
        removed += backend(brokers[0]).cancel_key("reminders", k, tenant=None, now=clock.time())
    threads[-1].join(timeout=60)
    stop.set()
    for t in threads[:-1]:
        t.join(timeout=60)
    assert backend(brokers[0]).check() == []
    left = [m.id for m, _ in q0.peek(1000)]
    assert not set(acked) & set(removed)
    assert sorted(acked + removed + left) == sorted(put)
