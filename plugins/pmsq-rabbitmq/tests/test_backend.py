"""The RabbitMQ backend's own behaviour: what it refuses, leases, shards, delays, dead letters."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pika
import pytest
from pmsq_rabbitmq import RabbitMQBackend

import pmsq
from pmsq.clock import ManualClock


def _backend(b: pmsq.Broker) -> RabbitMQBackend:
    assert isinstance(b.backend, RabbitMQBackend)
    return b.backend


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=time.time())


@pytest.fixture
def broker(store_url: str, clock: ManualClock) -> Iterator[pmsq.Broker]:
    with pmsq.connect(store_url + "&shards=2", clock=clock) as b:
        yield b


def _wait_for(q: pmsq.Queue, *, timeout: float = 20.0) -> pmsq.Delivery:
    return q.get(timeout=timeout)


# -- refusals: a missing capability never silently does less ---------------------------------
@pytest.mark.parametrize(
    ("words", "use"),
    [
        ("priorities", lambda b: b.queue("q").put(1, priority=5)),
        ("dedup", lambda b: b.queue("q").put(1, dedup_id="d")),
        ("coalesce", lambda b: b.queue("q").put(1, key="k", coalesce=True)),
        ("transactional put", lambda b: b.queue("q").put(1, connection=object())),
        ("rate limits", lambda b: b.declare_queue("q", rate_limit=pmsq.RateLimit(5))),
        ("on_key_failure", lambda b: b.declare_queue("q", on_key_failure="block")),
        ("max_depth", lambda b: b.declare_queue("q", max_depth=10)),
        ("max_depth", lambda b: b.declare_queue("q", tenant_quota=10)),
        ("claiming for one tenant", lambda b: b.tenant("acme").queue("q").get(timeout=0)),
        ("per-tenant statistics", lambda b: b.tenant("acme").stats("q")),
        ("peek", lambda b: b.queue("q").peek(5)),
        ("keyed messages", lambda b: b.queue("q").put(1, key="k", delay=3600)),
        ("presence", lambda b: b.workers()),
    ],
)
def test_unsupported_features_raise_a_clear_error(broker: pmsq.Broker, words: str, use) -> None:
    with pytest.raises(pmsq.ConfigurationError, match="RabbitMQ") as info:
        use(broker)
    assert words in str(info.value)


def test_nothing_is_stored_by_a_refused_put(broker: pmsq.Broker) -> None:
    q = broker.queue("q")
    with pytest.raises(pmsq.ConfigurationError):
        q.put_many([1, pmsq.NewMessage(2, priority=3)])
    assert q.get_many(10, timeout=0) == []


# -- the message lifecycle --------------------------------------------------------------------
def test_a_message_keeps_its_fields(broker: pmsq.Broker) -> None:
    q = broker.declare_queue("bookings")
    mid = q.put({"booking": 1}, key="property:1", tenant="acme", headers={"h": [1, "x"]})
    with _wait_for(q) as d:
        m = d.message
        assert (m.id, m.payload, m.key, m.tenant, m.headers) == (
            mid,
            {"booking": 1},
            "property:1",
            "acme",
            {"h": [1, "x"]},
        )
        assert m.attempt == 1
        assert m.correlation_id == mid
        assert m.enqueued_at.tzinfo is not None
    assert q.get_many(5, timeout=0) == []


def test_bytes_pass_through(broker: pmsq.Broker) -> None:
    q = broker.queue("raw")
    q.put(b"\x00\xffbinary")
    with _wait_for(q) as d:
        assert d.message.payload == b"\x00\xffbinary"


def test_retry_now_redelivers_with_the_next_attempt(broker: pmsq.Broker) -> None:
    q = broker.declare_queue("r", max_attempts=3)
    mid = q.put("x")
    for attempt in (1, 2):
        d = _wait_for(q)
        assert (d.message.id, d.message.attempt) == (mid, attempt)
        d.retry(delay=0)
    d = _wait_for(q)
    assert d.message.attempt == 3
    d.retry(delay=0)  # the last attempt: dead-lettered instead
    [dead] = broker.dead_letters("r").list()
    assert dead.message.id == mid
    assert dead.attempts == 3
    assert "retried 3 of 3" in dead.reason


def test_lease_expiry_counts_an_attempt_and_stales_the_old_receipt(
    broker: pmsq.Broker, clock: ManualClock
) -> None:
    q = broker.declare_queue("l", lease=10, max_attempts=2)
    mid = q.put("x")
    first = _wait_for(q)
    clock.advance(11)
    second = _wait_for(q)
    assert (second.message.id, second.message.attempt) == (mid, 2)
    with pytest.raises(pmsq.LeaseLost):
        first.ack()
    clock.advance(11)  # the last attempt's lease runs out too: dead-lettered at the next claim
    assert q.get_many(5, timeout=0.5) == []
    [dead] = broker.dead_letters("l").list()
    assert dead.message.id == mid
    assert "lease expired" in dead.reason
    with pytest.raises(pmsq.LeaseLost):
        second.ack()


def test_extend_keeps_the_lease(broker: pmsq.Broker, clock: ManualClock) -> None:
    q = broker.declare_queue("e", lease=10)
    q.put("x")
    d = _wait_for(q)
    clock.advance(8)
    d.extend(30)
    clock.advance(8)
    assert q.get_many(5, timeout=0) == []
    d.ack()


def test_a_lost_connection_loses_the_lease_and_the_message_returns(broker: pmsq.Broker) -> None:
    q = broker.declare_queue("c")
    mid = q.put("x")
    d = _wait_for(q)
    _backend(broker)._con._conn.close()  # what a broker restart or consumer_timeout does
    with pytest.raises(pmsq.LeaseLost):
        d.ack()
    again = _wait_for(q)
    assert (again.message.id, again.message.attempt) == (mid, 2)
    again.ack()


def test_release_does_not_spend_an_attempt(broker: pmsq.Broker) -> None:
    q = broker.queue("rel")
    q.put("plain")
    q.put("keyed", key="k")
    held = q.get_many(2, timeout=5)
    while len(held) < 2:
        held += q.get_many(2 - len(held), timeout=5)
    for d in held:
        d.release()
    again = q.get_many(2, timeout=5)
    while len(again) < 2:
        again += q.get_many(2 - len(again), timeout=5)
    assert sorted((d.message.payload, d.message.attempt) for d in again) == [
        ("keyed", 1),
        ("plain", 1),
    ]


# -- keys: shards, holding, ownership ------------------------------------------------------------
def test_keyed_retry_holds_its_shard_until_due(broker: pmsq.Broker, clock: ManualClock) -> None:
    q = broker.declare_queue("k", max_attempts=5)
    a = q.put("a", key="property:1")
    b = q.put("b", key="property:1")
    d = _wait_for(q)
    assert d.message.id == a
    d.retry(delay=30)
    assert q.get_many(5, timeout=0.3) == []  # b must not overtake a
    clock.advance(31)
    d = _wait_for(q)
    assert (d.message.id, d.message.attempt) == (a, 2)
    d.ack()
    d = _wait_for(q)
    assert d.message.id == b
    d.ack()


def test_a_delayed_keyed_put_holds_back_later_messages_of_its_key(
    broker: pmsq.Broker, clock: ManualClock
) -> None:
    q = broker.queue("kd")
    a = q.put("a", key="k", delay=60)
    b = q.put("b", key="k")
    assert q.get_many(5, timeout=0.3) == []
    clock.advance(61)
    for expected in (a, b):
        with _wait_for(q) as d:
            assert d.message.id == expected


def test_per_key_order_across_shards(broker: pmsq.Broker) -> None:
    q = broker.queue("order")
    expected: dict[str, list[int]] = {f"k{i}": [] for i in range(6)}
    q.put_many(
        [pmsq.NewMessage(n, key=f"k{n % 6}") for n in range(60)],
    )
    for n in range(60):
        expected[f"k{n % 6}"].append(n)
    seen: dict[str, list[int]] = {k: [] for k in expected}
    deadline = time.monotonic() + 30
    while sum(map(len, seen.values())) < 60 and time.monotonic() < deadline:
        for d in q.get_many(10, timeout=1):
            seen[d.message.key or ""].append(d.message.payload)
            d.ack()
    assert seen == expected


def test_a_shard_has_one_owner_and_passes_on_when_it_closes(store_url: str) -> None:
    url = store_url + "&shards=1&idle_release=600"
    with pmsq.connect(url) as a, pmsq.connect(url) as b:
        qa, qb = a.queue("own"), b.queue("own")
        first, second = qa.put("1", key="k"), qa.put("2", key="k")
        d = _wait_for(qa)
        assert d.message.id == first
        assert qb.get_many(5, timeout=0.5) == []  # b neither owns the shard nor sees 2
        a.close()  # the delivery goes back to the head of the shard, the shard is free
        deadline = time.monotonic() + 30
        got: list[pmsq.Delivery] = []
        while not got and time.monotonic() < deadline:
            got = qb.get_many(1, timeout=1)
        assert [g.message.id for g in got] == [first]
        got[0].ack()
        assert _wait_for(qb).message.id == second


# -- delays --------------------------------------------------------------------------------------
def test_delays_are_rounded_up_to_a_step_never_early(store_url: str) -> None:
    with pmsq.connect(store_url + "&delay_steps=1,2") as b:
        q = b.queue("d")
        q.put("late", delay=2.5)  # longer than the largest step: goes round the ladder twice
        q.put("soon", delay=0.5)
        for _ in range(2):
            d = _wait_for(q)
            assert time.time() >= d.message.enqueued_at.timestamp() + (
                2.5 if d.message.payload == "late" else 0.5
            )
            d.ack()


def test_a_delayed_retry_comes_back_after_its_delay(store_url: str) -> None:
    with pmsq.connect(store_url + "&delay_steps=1") as b:
        q = b.declare_queue("dr", max_attempts=3)
        mid = q.put("x")
        d = _wait_for(q)
        asked = time.time()
        d.retry(delay=0.8)
        again = _wait_for(q)
        assert (again.message.id, again.message.attempt) == (mid, 2)
        assert time.time() >= asked + 0.8
        again.ack()


# -- dead letters --------------------------------------------------------------------------------
def test_dead_letters_list_redrive_purge_and_fallback(broker: pmsq.Broker) -> None:
    q = broker.declare_queue("email", fallback="sms")
    ids = [q.put(n, tenant="acme" if n % 2 else "globex") for n in range(4)]
    for _ in ids:
        _wait_for(q).dead_letter("provider down")
    dl = broker.dead_letters("email")
    assert [d.message.id for d in dl.list()] == ids
    assert [d.message.id for d in dl.list(limit=2)] == ids[:2]
    assert {d.message.id for d in broker.tenant("acme").dead_letters("email").list()} == {
        ids[1],
        ids[3],
    }
    assert all(d.reason == "provider down" for d in dl.list())
    sms = broker.queue("sms")
    copies = [_wait_for(sms) for _ in ids]
    assert {c.message.headers["pmsq.dead_letter"]["message_id"] for c in copies} == set(ids)
    assert dl.redrive([ids[0]]) == 1
    d = _wait_for(q)
    assert (d.message.id, d.message.attempt) == (ids[0], 1)
    d.ack()
    assert dl.purge([ids[1]]) == 1
    assert [d.message.id for d in dl.list()] == ids[2:]
    assert dl.purge() == 2
    assert dl.list() == []


def test_stats_count_the_broker_queues(broker: pmsq.Broker) -> None:
    q = broker.queue("s")
    q.put_many([1, 2, pmsq.NewMessage(3, key="k")])
    q.put(4, delay=30)
    d = _wait_for(q)
    deadline = time.monotonic() + 10
    while True:
        st = broker.stats("s")
        if st.ready + st.in_flight == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert (st.ready + st.in_flight, st.in_flight, st.delayed, st.dead) == (3, 1, 1, 0)
    d.dead_letter("x")
    assert broker.stats("s").dead == 1


# -- topics and the catalogue ------------------------------------------------------------------
def test_publish_fans_out_and_unroutable_stores_nothing(broker: pmsq.Broker) -> None:
    broker.subscribe("booking.*", queue="calendar")
    broker.subscribe("booking.#", queue="email")
    ids = broker.publish("booking.created", {"id": 1}, key="property:1")
    assert len(set(ids)) == 2
    got = [_wait_for(broker.queue(n)) for n in ("calendar", "email")]
    assert {g.message.id for g in got} == set(ids)
    assert {g.message.correlation_id for g in got} == {ids[0]}
    with pytest.raises(pmsq.Unroutable):
        broker.publish("invoice.paid", {})


def test_a_queue_missing_on_the_server_is_unroutable_and_check_reports_it(
    broker: pmsq.Broker, rabbitmq_url: str
) -> None:
    q = broker.queue("gone")
    assert broker.backend.check() == []
    conn = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        conn.channel().queue_delete(_backend(broker).names.main("gone"))
    finally:
        conn.close()
    with pytest.raises(pmsq.Unroutable):
        q.put("x")
    assert any("gone" in p for p in broker.backend.check())


def test_declarations_and_bindings_are_seen_by_other_processes(store_url: str) -> None:
    with pmsq.connect(store_url) as a, pmsq.connect(store_url) as b:
        a.declare_queue("payments", max_attempts=7, fallback="payments.slow")
        a.subscribe("pay.*", queue="payments")
        assert b.backend.queue_config("payments").max_attempts == 7
        assert ("pay.*", "payments") in b.backend.bindings() or _eventually(
            lambda: ("pay.*", "payments") in b.backend.bindings()
        )
        b.declare_queue("payments", max_attempts=9)
        assert _eventually(lambda: a.backend.queue_config("payments").max_attempts == 9)
        assert [c.name for c in a.queues()] == ["payments"]


def _eventually(cond, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return bool(cond())


def test_concurrent_catalogue_writers_lose_nothing(store_url: str) -> None:
    brokers = [pmsq.connect(store_url) for _ in range(3)]
    try:
        errors: list[BaseException] = []

        def declare(b: pmsq.Broker, n: int) -> None:
            try:
                for i in range(4):
                    b.declare_queue(f"q{n}-{i}")
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=declare, args=(b, n)) for n, b in enumerate(brokers * 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(brokers[0].queues()) == 24
    finally:
        for b in brokers:
            b.close()


def test_threads_share_one_broker(broker: pmsq.Broker) -> None:
    q = broker.queue("t")
    total = 200
    q.put_many([pmsq.NewMessage(n, key=f"k{n % 5}" if n % 2 else None) for n in range(total)])
    acked: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        idle_until = time.monotonic() + 3
        while time.monotonic() < idle_until:
            batch = q.get_many(5, timeout=0.2)
            for d in batch:
                d.ack()
                with lock:
                    acked.append(d.message.payload)
            if batch:
                idle_until = time.monotonic() + 3

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(acked) == list(range(total))


# -- the edges: foreign messages, the broker's own dead-lettering, no server ----------------------
def test_a_message_from_a_plain_amqp_client_is_handled_as_bytes(
    broker: pmsq.Broker, rabbitmq_url: str
) -> None:
    q = broker.queue("foreign")
    conn = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        conn.channel().basic_publish(
            "",
            _backend(broker).names.main("foreign"),
            b"hello",
            pika.BasicProperties(message_id="ext-1", delivery_mode=2),
        )
    finally:
        conn.close()
    with q.get(timeout=10) as d:
        assert (d.message.id, d.message.payload, d.message.attempt) == ("ext-1", b"hello", 1)


def test_the_delivery_limit_backstop_dead_letters_a_crash_loop(
    broker: pmsq.Broker, rabbitmq_url: str
) -> None:
    # Consumers that die between basic_get and pmsq's own attempt check: the
    # quorum queue's x-delivery-limit (= max_attempts) dead-letters the message.
    q = broker.declare_queue("loop", max_attempts=1)
    mid = q.put("poison")
    name = _backend(broker).names.main("loop")
    for _ in range(2):
        conn = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
        method, _props, _body = conn.channel().basic_get(name)
        assert method is not None
        conn.close()  # dies holding it: the broker counts a delivery
    assert _eventually(lambda: len(broker.dead_letters("loop").list()) == 1, timeout=10)
    [dead] = broker.dead_letters("loop").list()
    assert dead.message.id == mid
    assert "RabbitMQ dead-lettered it" in dead.reason
    assert q.get_many(5, timeout=0) == []


def test_an_unreachable_server_raises_backend_unavailable() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(pmsq.BackendUnavailable, match="cannot reach RabbitMQ"):
        pmsq.connect(f"amqp://guest:guest@127.0.0.1:{port}/?connection_attempts=1")


# -- consumers: the processes claiming from a queue, as RabbitMQ knows them -------------------
def test_consumers_count_the_connections_claiming_from_the_queue(
    broker: pmsq.Broker, store_url: str
) -> None:
    broker.declare_queue("email")
    assert broker.stats("email").consumers == 0
    with pmsq.connect(store_url + "&shards=2") as worker_side:
        worker_side.queue("email").get_many(1, timeout=0)  # claims: registers as a claimer
        assert broker.stats("email").consumers == 1
    # Its connection closed: RabbitMQ drops the consumer with it.
    assert broker.stats("email").consumers == 0
