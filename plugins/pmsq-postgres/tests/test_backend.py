"""What only the PostgreSQL backend has to get right: schemas, concurrency, outbox, once, NOTIFY.

The semantics every backend shares are in ``test_conformance.py`` (pmsq's suite).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from pmsq_postgres import PostgresBackend

import pmsq
from pmsq.clock import ManualClock

Connect = Callable[..., pmsq.Broker]


def backend(b: pmsq.Broker) -> PostgresBackend:
    assert isinstance(b.backend, PostgresBackend)
    return b.backend


def poll(predicate: Callable[[], bool], *, deadline: float = 20.0) -> None:
    """Wait (deterministically, by polling) until ``predicate()``; fail after ``deadline`` s."""
    end = time.monotonic() + deadline
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


# -- schema -----------------------------------------------------------------------------


def test_tables_live_in_the_configured_schema(
    broker: pmsq.Broker, pg_url: str, schema: str
) -> None:
    broker.queue("calendar").put({"a": 1})
    with psycopg.connect(pg_url.split("?")[0]) as conn:
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (schema,),
            )
        }
        public = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert {"messages", "keys", "queues", "dedup", "meta"} <= tables
    assert public == (0,)


def test_schema_kwarg_overrides_the_url(pg_server: object, connect: Connect, schema: str) -> None:
    b = connect(schema=f"{schema}_kw")
    try:
        assert backend(b).schema == f"{schema}_kw"
    finally:
        b.close()
        with psycopg.connect(pg_url_of(b), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}_kw" CASCADE')


def pg_url_of(b: pmsq.Broker) -> str:
    return backend(b).url.split("?")[0]


def test_foreign_schema_is_refused_untouched(pg_url: str, schema: str) -> None:
    base = pg_url.split("?")[0]
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'CREATE TABLE "{schema}".invoices (id int)')
    with pytest.raises(pmsq.StorageError, match="not pmsq's"):
        pmsq.connect(pg_url)
    with psycopg.connect(base) as conn:
        left = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchall()
    assert left == [("invoices",)]


def test_newer_schema_version_is_refused(broker: pmsq.Broker, pg_url: str, schema: str) -> None:
    broker.close()
    with psycopg.connect(pg_url.split("?")[0], autocommit=True) as conn:
        conn.execute(f"UPDATE \"{schema}\".meta SET v = '999' WHERE k = 'schema_version'")
    with pytest.raises(pmsq.StorageError, match="newer pmsq"):
        pmsq.connect(pg_url)


def test_processes_opening_a_new_store_at_once_create_it_once(pg_url: str) -> None:
    with ThreadPoolExecutor(4) as pool:
        brokers = list(pool.map(lambda _: pmsq.connect(pg_url), range(4)))
    try:
        ids = [b.queue("q").put({"n": i}) for i, b in enumerate(brokers)]
        assert sorted(
            d.message.id for d in brokers[0].queue("q").get_many(10, timeout=0)
        ) == sorted(ids)
    finally:
        for b in brokers:
            b.close()


def test_first_use_of_a_queue_never_resets_a_declaration(connect: Connect) -> None:
    a, b = connect(), connect()
    a.declare_queue("payments", max_attempts=9)
    b.queue("payments")  # first use in b: ensure_queue, not declare
    assert a.queue_config("payments").max_attempts == 9
    assert b.queues()[0].max_attempts == 9


def test_reserved_meta_keys_cannot_be_set(broker: pmsq.Broker) -> None:
    be = backend(broker)
    for key in ("schema_version", "store"):
        with pytest.raises(pmsq.ConfigurationError):
            be.set_meta(key, "x")
    be.set_meta("alerts", "{}")
    assert be.get_meta("alerts") == "{}"
    be.set_meta("alerts", None)
    assert be.get_meta("alerts") is None


def test_durability_sets_synchronous_commit(connect: Connect) -> None:
    for durability, expected in (("full", "on"), ("normal", "off")):
        be = backend(connect(durability=durability))
        got = be._run(lambda tx: tx.one("SHOW synchronous_commit")[0])
        assert got == expected


# -- per-key order under concurrent producers ----------------------------------------------


def test_a_later_producer_of_a_key_waits_for_an_earlier_uncommitted_one(
    broker: pmsq.Broker, pg_url: str
) -> None:
    """The out-of-order-commit case: the second put must not overtake the first.

    With "earliest uncommitted id wins" a second producer would commit first
    and its message be delivered before the first producer's.
    """
    q = broker.queue("calendar")
    base = pg_url.split("?")[0]
    app = psycopg.connect(base)
    try:
        first = q.put({"n": 1}, key="property:1", connection=app)  # open transaction
        done: list[str] = []
        t = threading.Thread(target=lambda: done.append(q.put({"n": 2}, key="property:1")))
        t.start()
        with psycopg.connect(base, autocommit=True) as watcher:
            poll(
                lambda: (
                    watcher.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    ).fetchone()
                    == (1,)
                )
            )
        assert q.get_many(5, timeout=0) == []  # nothing of the key is visible yet
        app.commit()
        t.join(timeout=30)
        assert done
    finally:
        app.close()
    d = q.get(timeout=0)
    assert d.message.id == first
    assert q.get_many(5, timeout=0) == []  # the key is busy
    d.ack()
    assert [x.message.id for x in q.get_many(5, timeout=0)] == done


def test_an_ack_waiting_for_a_producer_of_its_key_hands_the_key_on(
    broker: pmsq.Broker, pg_url: str
) -> None:
    """The ack must look for the next message only after the producer committed it.

    Were the lookup in the statement that waited for the key's row, its
    snapshot would predate the producer's commit: the new message would
    never become the head and the key would be stuck.
    """
    q = broker.queue("calendar")
    q.put({"n": 1}, key="property:1")
    first = q.get(timeout=0)
    base = pg_url.split("?")[0]
    app = psycopg.connect(base)
    try:
        second = q.put({"n": 2}, key="property:1", connection=app)  # holds the key's row
        t = threading.Thread(target=first.ack)
        t.start()
        with psycopg.connect(base, autocommit=True) as watcher:
            poll(
                lambda: (
                    watcher.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    ).fetchone()
                    == (1,)
                )
            )
        app.commit()
        t.join(timeout=30)
        assert first.settled == "acked"
    finally:
        app.close()
    assert [d.message.id for d in q.get_many(5, timeout=0)] == [second]
    assert backend(broker).check() == []


def test_concurrent_producers_and_consumers_keep_key_order(connect: Connect) -> None:
    """4 producer threads and 4 consumer threads on two brokers, 10 % nacks."""
    producer_b, consumer_b = connect(clock=None), connect(clock=None)
    producer_b.declare_queue("calendar", lease=60.0, max_attempts=100)
    q_put, q_get = producer_b.queue("calendar"), consumer_b.queue("calendar")
    keys = [f"property:{i}" for i in range(6)]
    per_producer = 60
    total = 4 * per_producer
    lock = threading.Lock()
    in_flight: dict[str, str] = {}
    overlaps: list[str] = []
    processed: dict[str, list[tuple[int, int]]] = defaultdict(list)
    acked = [0]

    def produce(p: int) -> None:
        for i in range(per_producer):
            key = keys[(p + i) % len(keys)]
            if i % 7 == 0:
                q_put.put_many([pmsq.NewMessage({"p": p, "i": i}, key=key)])
            else:
                q_put.put({"p": p, "i": i}, key=key)

    deadline = time.monotonic() + 60  # a key left without a head would stall it for ever

    def consume(c: int) -> None:
        n = 0
        while time.monotonic() < deadline:
            with lock:
                if acked[0] >= total:
                    return
            batch = q_get.get_many(2, timeout=0.2)
            for d in batch:
                key = d.message.key
                assert key is not None
                with lock:
                    if key in in_flight:
                        overlaps.append(key)
                    in_flight[key] = d.message.id
                n += 1
                payload = d.message.payload
                if (n + c) % 10 == 0:
                    with lock:
                        del in_flight[key]
                    d.retry(delay=0)
                    continue
                with lock:
                    processed[key].append((payload["p"], payload["i"]))
                    del in_flight[key]
                    acked[0] += 1
                d.ack()

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(produce, p) for p in range(4)]
        futures += [pool.submit(consume, c) for c in range(4)]
        for f in futures:
            f.result(timeout=120)
    assert overlaps == []
    assert sum(len(v) for v in processed.values()) == total
    for key, seen in processed.items():
        for p in range(4):
            mine = [i for pp, i in seen if pp == p]
            assert mine == sorted(mine), f"{key}: producer {p} order broken: {mine}"
            assert len(set(mine)) == len(mine)
    assert backend(consumer_b).check() == []


def test_concurrent_claims_never_lease_one_message_twice(connect: Connect) -> None:
    brokers = [connect() for _ in range(3)]
    brokers[0].queue("q").put_many(list(range(300)))
    got: list[str] = []
    lock = threading.Lock()

    def drain(b: pmsq.Broker) -> None:
        q = b.queue("q")
        while batch := q.get_many(7, timeout=0):
            with lock:
                got.extend(d.message.id for d in batch)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(drain, brokers * 2))
    assert len(got) == 300
    assert len(set(got)) == 300


def test_concurrent_puts_with_one_dedup_id_store_one_message(connect: Connect) -> None:
    brokers = [connect() for _ in range(4)]
    barrier = threading.Barrier(4)

    def put(b: pmsq.Broker) -> str:
        barrier.wait()
        return b.queue("payments").put({"amount": 10}, dedup_id="pay-1")

    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(put, brokers))
    assert len(set(ids)) == 1
    assert [d.message.id for d in brokers[0].queue("payments").get_many(10, timeout=0)] == ids[:1]


def test_max_depth_holds_under_concurrent_producers(connect: Connect) -> None:
    brokers = [connect() for _ in range(4)]
    brokers[0].declare_queue("imports", max_depth=10)
    stored: list[str] = []
    full = [0]
    lock = threading.Lock()

    def put(b: pmsq.Broker) -> None:
        for i in range(6):
            try:
                mid = b.queue("imports").put({"i": i})
            except pmsq.QueueFull:
                with lock:
                    full[0] += 1
            else:
                with lock:
                    stored.append(mid)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(put, brokers))
    assert len(stored) == 10
    assert full[0] == 14


def test_rate_limit_holds_across_brokers_claiming_at_once(
    connect: Connect, clock: ManualClock
) -> None:
    brokers = [connect() for _ in range(4)]
    brokers[0].declare_queue("channel", rate_limit=pmsq.RateLimit(5, per=10.0))
    brokers[0].queue("channel").put_many(list(range(50)))
    barrier = threading.Barrier(4)

    def claim(b: pmsq.Broker) -> int:
        barrier.wait()
        return sum(len(b.queue("channel").get_many(3, timeout=0)) for _ in range(3))

    with ThreadPoolExecutor(4) as pool:
        assert sum(pool.map(claim, brokers)) == 5
    clock.advance(10.0)
    assert len(brokers[1].queue("channel").get_many(50, timeout=0)) == 5


# -- transactional outbox and once ----------------------------------------------------------


def test_outbox_put_commits_and_rolls_back_with_the_app(broker: pmsq.Broker, pg_url: str) -> None:
    q = broker.queue("email")
    base = pg_url.split("?")[0]
    with psycopg.connect(base) as app:
        app.execute("CREATE TEMP TABLE bookings (id int)")
        app.execute("INSERT INTO bookings VALUES (1)")
        kept = q.put({"booking": 1}, connection=app)
        app.commit()
        app.execute("INSERT INTO bookings VALUES (2)")
        q.put({"booking": 2}, connection=app)
        app.rollback()
    assert [d.message.id for d in q.get_many(10, timeout=0)] == [kept]


def test_outbox_on_an_autocommit_connection_waits_for_the_apps_commit(
    broker: pmsq.Broker, pg_url: str
) -> None:
    q = broker.queue("email")
    with psycopg.connect(pg_url.split("?")[0], autocommit=True) as app:
        mid = q.put({"x": 1}, connection=app)
        assert q.get_many(10, timeout=0) == []
        app.commit()
    assert [d.message.id for d in q.get_many(10, timeout=0)] == [mid]


def test_outbox_notifies_only_when_the_app_commits(connect: Connect, pg_url: str) -> None:
    consumer, producer = connect(), connect(notify=True)
    be = backend(consumer)
    woke: list[str] = []
    be._listener.add_callback(woke.append)
    # Wait until the listener is connected: a committed put reaches it.
    poll(lambda: bool(producer.queue("warmup").put({}) and "warmup" in woke))
    with psycopg.connect(pg_url.split("?")[0]) as app:
        producer.queue("email").put({"x": 1}, connection=app)
        count = woke.count("warmup")
        producer.queue("warmup").put({})  # a later, committed put: its NOTIFY comes through
        poll(lambda: woke.count("warmup") > count)
        assert "email" not in woke
        app.commit()
    poll(lambda: "email" in woke)


def test_outbox_errors_roll_back_only_pmsqs_part(broker: pmsq.Broker, pg_url: str) -> None:
    broker.declare_queue("small", max_depth=1)
    q = broker.queue("small")
    with psycopg.connect(pg_url.split("?")[0]) as app:
        app.execute("CREATE TEMP TABLE effects (id int)")
        app.execute("INSERT INTO effects VALUES (1)")
        q.put({"n": 1}, connection=app)
        with pytest.raises(pmsq.QueueFull):
            q.put({"n": 2}, connection=app)
        assert app.execute("SELECT count(*) FROM effects").fetchone() == (1,)
        app.commit()
    assert len(q.get_many(10, timeout=0)) == 1


def test_outbox_rejects_foreign_connections(broker: pmsq.Broker, tmp_path: object) -> None:
    import sqlite3

    q = broker.queue("email")
    with pytest.raises(pmsq.ConfigurationError, match="psycopg"):
        q.put({"x": 1}, connection=sqlite3.connect(":memory:"))


def test_outbox_needs_the_stores_database(broker: pmsq.Broker, pg_server: object) -> None:
    url = broker.backend.url.split("?")[0]  # type: ignore[attr-defined]
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS other")
        admin.execute("CREATE DATABASE other")
    try:
        with (
            psycopg.connect(url.rsplit("/", 1)[0] + "/other") as app,
            pytest.raises(pmsq.ConfigurationError, match="database"),
        ):
            broker.queue("email").put({"x": 1}, connection=app)
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("DROP DATABASE other")


def test_once_records_with_the_apps_commit(broker: pmsq.Broker, pg_url: str) -> None:
    q = broker.queue("accounting")
    q.put({"invoice": 7})
    d = q.get(timeout=0)
    base = pg_url.split("?")[0]
    with psycopg.connect(base) as app:
        with broker.once(d.message, connection=app) as first:
            assert first
        app.rollback()  # the effect failed: not recorded
        with broker.once(d.message, connection=app) as first:
            assert first
        app.commit()
        with broker.once(d.message, connection=app) as first:
            assert not first
        with broker.once(d.message, connection=app, consumer="audit") as first:
            assert first
        app.rollback()
    d.ack()


def test_once_waits_for_a_concurrent_recorder(broker: pmsq.Broker, pg_url: str) -> None:
    q = broker.queue("accounting")
    q.put({"invoice": 8})
    msg = q.get(timeout=0).message
    base = pg_url.split("?")[0]
    with psycopg.connect(base) as a, psycopg.connect(base) as b:
        with broker.once(msg, connection=a) as first:
            assert first
        result: list[bool] = []

        def second() -> None:
            with broker.once(msg, connection=b) as f:
                result.append(f)

        t = threading.Thread(target=second)
        t.start()
        with psycopg.connect(base, autocommit=True) as watcher:
            poll(
                lambda: (
                    watcher.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    ).fetchone()
                    == (1,)
                )
            )
        a.commit()
        t.join(timeout=30)
        assert result == [False]


# -- NOTIFY wake-ups and invariants ---------------------------------------------------------


def test_a_put_from_another_broker_wakes_a_waiting_consumer(connect: Connect) -> None:
    consumer, producer = connect(notify=True), connect(notify=True)
    be = backend(consumer)
    be.wait_for_change(None, 0)  # starts listening
    poll(lambda: be._listener._total >= 1)  # connected (the connection counts as one)
    since = be.wait_for_change(None, 0)
    woke: list[object] = []

    def wait() -> None:
        # Only a NOTIFY ends this wait early: the WAL position is read after it.
        woke.append(be.wait_for_change(since, 60.0))

    t = threading.Thread(target=wait)
    t.start()
    producer.queue("calendar").put({"x": 1})
    t.join(timeout=30)
    assert not t.is_alive(), "the NOTIFY of another broker's put did not end the wait"
    assert woke
    assert woke[0] != since
    assert "calendar" in be.ready_queues(["calendar", "idle"], now=time.time()).queues


def test_a_redriven_keyed_dead_letter_is_ordered_as_a_new_put(
    broker: pmsq.Broker, clock: ManualClock
) -> None:
    q = broker.declare_queue("sync", max_attempts=1, on_key_failure="continue")
    keyed = q.put({"n": 1}, key="property:1")
    q.get(timeout=0).dead_letter("channel down")
    later = q.put({"n": 2})
    assert broker.dead_letters("sync").redrive() == 1
    assert [d.message.id for d in q.get_many(5, timeout=0)] == [later, keyed]
    assert backend(broker).check() == []


def test_check_reports_a_broken_key_line(broker: pmsq.Broker, pg_url: str, schema: str) -> None:
    q = broker.queue("calendar")
    q.put_many([pmsq.NewMessage({"n": i}, key="k") for i in range(3)])
    assert backend(broker).check() == []
    with psycopg.connect(pg_url.split("?")[0], autocommit=True) as conn:
        conn.execute(f'UPDATE "{schema}".messages SET head = true')
    problems = backend(broker).check()
    assert problems
    assert "3 heads" in problems[0]


def test_expired_lease_processing_is_shared_by_concurrent_claimers(
    connect: Connect, clock: ManualClock
) -> None:
    a, b = connect(), connect()
    a.declare_queue("q", lease=5.0, max_attempts=2)
    a.queue("q").put_many([pmsq.NewMessage({"n": i}, key=f"k{i % 5}") for i in range(40)])
    first = a.queue("q").get_many(40, timeout=0)
    assert len(first) == 5  # one head per key
    clock.advance(6.0)
    with ThreadPoolExecutor(2) as pool:
        again = list(pool.map(lambda br: br.queue("q").get_many(3, timeout=0), [a, b]))
    # A claim passes over rows the other one holds (SKIP LOCKED): collect the rest after.
    again.append(a.queue("q").get_many(5, timeout=0))
    ids = [d.message.id for batch in again for d in batch]
    assert sorted(ids) == sorted(d.message.id for d in first)
    assert all(d.message.attempt == 2 for batch in again for d in batch)
    assert backend(a).check() == []


def test_a_long_schema_name_still_gets_a_valid_notify_channel(
    pg_server: object, schema: str
) -> None:
    long_schema = (schema + "_" + "x" * 63)[:63]
    url = f"{pg_server.url}?schema={long_schema}"  # type: ignore[attr-defined]
    b = pmsq.connect(url, notify=True)
    try:
        b.queue("q").put({"n": 1})  # sends NOTIFY on the (shortened) channel
        assert len(b.queue("q").get_many(5, timeout=0)) == 1
    finally:
        b.close()
        with psycopg.connect(url.split("?")[0], autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{long_schema}" CASCADE')
