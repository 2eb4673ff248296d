"""``pmsq.connect(url, routes=)`` across two SQLite files: where queues live, what spans
the stores, what is refused, and workers serving queues of both stores."""

from __future__ import annotations

import random
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from worker._support import Running, wait_for

import pmsq
from pmsq.backends.families import History
from pmsq.backends.routed import RoutedBackend
from pmsq.clock import ManualClock


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "main.db", tmp_path / "payments.db"


@pytest.fixture
def broker(files: tuple[Path, Path]) -> Iterator[pmsq.Broker]:
    main, pay = files
    clock = ManualClock(1_800_000_000.0)
    with pmsq.connect(
        str(main), routes={"payments.#": f"sqlite:///{pay}"}, clock=clock, durability="normal"
    ) as b:
        yield b


def alone(path: Path) -> pmsq.Broker:
    return pmsq.connect(str(path), durability="normal")


def test_each_queue_and_its_bindings_live_in_the_store_its_name_routes_to(
    broker: pmsq.Broker, files: tuple[Path, Path]
) -> None:
    broker.declare_queue("payments")
    broker.declare_queue("payments.refunds")
    broker.declare_queue("email")
    broker.subscribe("booking.*", queue="payments")
    broker.subscribe("booking.*", queue="email")
    assert [q.name for q in broker.queues()] == ["email", "payments", "payments.refunds"]
    assert broker.bindings() == [("booking.*", "email"), ("booking.*", "payments")]
    main, pay = files
    with alone(main) as a, alone(pay) as p:
        assert [q.name for q in a.queues()] == ["email"]
        assert [q.name for q in p.queues()] == ["payments", "payments.refunds"]
        assert a.bindings() == [("booking.*", "email")]
        assert p.bindings() == [("booking.*", "payments")]


def test_a_publish_puts_each_copy_in_its_queues_store(
    broker: pmsq.Broker, files: tuple[Path, Path]
) -> None:
    broker.subscribe("booking.*", queue="payments")
    broker.subscribe("booking.*", queue="email")
    ids = broker.publish("booking.created", {"id": 1}, key="property:4521")
    assert len(ids) == 2
    main, pay = files
    with alone(main) as a, alone(pay) as p:
        assert [m.id for m, _ in a.queue("email").peek(10)] == [ids[0]]
        assert [m.id for m, _ in p.queue("payments").peek(10)] == [ids[1]]
        # The copies share one correlation id across the stores (a trace finds them).
        (ma, _), (mp, _) = a.queue("email").peek(1)[0], p.queue("payments").peek(1)[0]
        assert ma.correlation_id == mp.correlation_id


@pytest.mark.parametrize(
    ("routes", "words"),
    [
        (["payments.#"], "mapping"),
        ({"pay ments": "x.db"}, "invalid topic pattern"),
        ({"payments..#": "x.db"}, "invalid topic pattern"),
        ({"payments.#": ""}, "URL"),
        ({"payments.#": 5}, "URL"),
        ({"payments.#": "nosuch://host/db"}, "unknown URL scheme"),
    ],
)
def test_bad_routes_are_refused_and_create_nothing(tmp_path: Path, routes: Any, words: str) -> None:
    with pytest.raises(pmsq.ConfigurationError, match=words):
        pmsq.connect(str(tmp_path / "main.db"), routes=routes)
    if words != "unknown URL scheme":  # the default store opens before the plugin lookup
        assert list(tmp_path.iterdir()) == []


def test_a_path_and_its_url_are_one_store(tmp_path: Path) -> None:
    main = tmp_path / "main.db"
    with pmsq.connect(str(main), routes={"payments.#": f"sqlite:///{main}"}) as b:
        assert not isinstance(b.backend, RoutedBackend)


def test_stats_dead_letters_alerts_trace_and_schedules_span_the_stores(
    broker: pmsq.Broker, files: tuple[Path, Path]
) -> None:
    broker.declare_queue("payments", max_attempts=1)
    broker.declare_queue("email")
    broker.subscribe("booking.*", queue="payments")
    broker.subscribe("booking.*", queue="email")
    broker.publish("booking.created", {"id": 1})
    with broker.queue("payments").get(timeout=0) as d:
        d.dead_letter("card declined")

    snap = broker.stats()
    assert {n: (q.ready, q.dead) for n, q in snap.queues.items()} == {
        "email": (1, 0),
        "payments": (0, 1),
    }
    assert broker.stats("payments").dead == 1
    [dead] = broker.dead_letters("payments").list()
    assert dead.reason == "card declined"

    broker.alert("payments", dead_letters=0)
    alerts = broker.check_alerts()
    # No worker runs: email's due message has no consumer; payments has a dead letter.
    assert sorted((a.queue, a.metric) for a in alerts) == [
        ("email", "consumers"),
        ("payments", "dead"),
    ]
    main, pay = files
    with alone(pay) as p:  # the rule lives with its queue
        assert [(a.queue, a.metric) for a in p.check_alerts()] == [("payments", "dead")]

    events = History.of(broker.backend).history(correlation_id=dead.message.correlation_id)
    assert {e.queue for e in events} == {"email", "payments"}
    assert [e.at for e in events] == sorted(e.at for e in events)

    assert broker.dead_letters("payments").redrive() == 1
    assert broker.stats("payments").ready == 1

    broker.schedule("settle", queue="payments", every=60.0, payload={"job": "settle"})
    broker.schedule("digest", queue="email", every=60.0, payload={"job": "digest"})
    assert [s.name for s in broker.schedules()] == ["digest", "settle"]
    assert isinstance(broker.clock, ManualClock)
    broker.clock.advance(61)
    assert broker.run_schedules() == 2
    assert broker.run_schedules() == 0  # each slot once
    with alone(main) as a, alone(pay) as p:
        assert [s.name for s in a.schedules()] == ["digest"]
        assert [s.name for s in p.schedules()] == ["settle"]
    assert broker.stats("payments").ready == 2
    assert broker.unschedule("settle")
    assert [s.name for s in broker.schedules()] == ["digest"]


def test_connection_works_for_its_own_stores_queues_and_is_refused_for_others(
    broker: pmsq.Broker, files: tuple[Path, Path]
) -> None:
    main, pay = files
    broker.declare_queue("email")
    broker.declare_queue("payments")
    broker.subscribe("booking.*", queue="email")
    broker.subscribe("booking.*", queue="payments")
    app = sqlite3.connect(str(main), isolation_level=None)
    try:
        app.execute("BEGIN IMMEDIATE")
        mid = broker.queue("email").put({"to": "guest"}, connection=app)
        with pytest.raises(pmsq.ConfigurationError, match=r"payments.*payments\.db"):
            broker.queue("payments").put({"amount": 10}, connection=app)
        with pytest.raises(pmsq.ConfigurationError, match="different stores"):
            broker.publish("booking.created", {"id": 1}, connection=app)
        app.execute("COMMIT")
    finally:
        app.close()
    assert [m.id for m, _ in broker.queue("email").peek(10)] == [mid]
    assert broker.stats("payments").ready == 0

    pay_app = sqlite3.connect(str(pay), isolation_level=None)
    try:
        pay_app.execute("BEGIN IMMEDIATE")
        broker.queue("payments").put({"amount": 10}, connection=pay_app)
        pay_app.execute("ROLLBACK")  # the message goes with the app's rollback
    finally:
        pay_app.close()
    assert broker.stats("payments").ready == 0


def test_a_queue_whose_route_changed_under_it_is_refused_at_connect(tmp_path: Path) -> None:
    main, pay = tmp_path / "main.db", tmp_path / "payments.db"
    with pmsq.connect(str(main)) as b:
        b.queue("payments").put({"amount": 10})
    with pytest.raises(pmsq.ConfigurationError, match="pmsq migrate") as info:
        pmsq.connect(str(main), routes={"payments.#": str(pay)})
    assert "payments" in str(info.value)
    assert str(pay) in str(info.value)
    with pmsq.connect(str(main)) as b:  # nothing was lost by the refusal
        assert b.stats("payments").ready == 1


def test_a_fallback_in_another_store_is_refused(broker: pmsq.Broker) -> None:
    with pytest.raises(pmsq.ConfigurationError, match="same store"):
        broker.declare_queue("email", fallback="payments.sms")
    broker.declare_queue("payments.cards", fallback="payments.manual")  # same store: fine


def test_the_change_wait_blocks_in_every_store_and_wakes_on_a_write_to_any(
    files: tuple[Path, Path],
) -> None:
    main, pay = files
    with pmsq.connect(str(main), routes={"payments.#": str(pay)}, poll_interval=0.05) as b:
        backend = b.backend
        assert isinstance(backend, RoutedBackend)
        timeouts: list[list[float]] = [[], []]
        for i, store in enumerate(backend.stores):
            inner: Callable[[object, float], object] = store.wait_for_change

            def spy(since: object, timeout: float, i: int = i, inner: Any = inner) -> object:
                timeouts[i].append(timeout)
                return inner(since, timeout)

            store.wait_for_change = spy  # type: ignore[method-assign]
        backend._watch._waits = tuple(s.wait_for_change for s in backend.stores)
        for path, queue in ((pay, "payments"), (main, "email")):
            token = backend.wait_for_change(None, 0.0)
            with alone(path) as other:  # another process's write, no local notify
                other.queue(queue).put({"n": 1})
            wait_for(lambda t=token: backend.wait_for_change(t, 0.2) != t, what=path.name)
        # After the first token, every watcher call blocks for the interval: no spinning.
        assert all(len(t) >= 2 for t in timeouts)
        assert all(t[0] == 0.0 and set(t[1:]) == {0.05} for t in timeouts), timeouts


@pytest.mark.parametrize("kind", ["thread", "asyncio"])
def test_a_worker_serving_both_stores_keeps_key_order_and_delivers_everything(
    files: tuple[Path, Path], kind: str
) -> None:
    main, pay = files
    rng = random.Random(21)
    seen: dict[tuple[str, str], list[int]] = defaultdict(list)
    lock = threading.Lock()
    failed_once: set[str] = set()
    with pmsq.connect(
        str(main), routes={"payments.#": str(pay)}, durability="normal", poll_interval=0.02
    ) as b:
        for q in ("payments", "email"):
            b.declare_queue(q, max_attempts=10, backoff=pmsq.Backoff(base=0.0, jitter=False))

        def handle(msg: pmsq.Message) -> None:
            with lock:
                # Fail some first attempts: a retried head must still hold back its key.
                if msg.id not in failed_once and rng.random() < 0.2:
                    failed_once.add(msg.id)
                    raise RuntimeError("flaky channel")
                seen[(msg.queue, msg.key or "")].append(msg.payload["n"])

        b.handler("payments", concurrency=4)(handle)
        b.handler("email", concurrency=4)(handle)
        total = 0
        for n in range(40):
            for q in ("payments", "email"):
                b.queue(q).put({"n": n}, key=f"property:{n % 4}")
                total += 1
        running = Running(kind, b, concurrency=8)
        try:
            wait_for(lambda: sum(len(v) for v in seen.values()) >= total, what="all handled")
        finally:
            running.stop()
        assert {q for q, _ in seen} == {"payments", "email"}
        for (q, key), ns in seen.items():
            assert ns == sorted(ns), f"{q} {key} out of order: {ns}"
            assert len(ns) == len(set(ns)) == 10  # each acked once (no lost ack here)
        assert b.stats("payments").ready == b.stats("email").ready == 0


def test_an_operator_event_is_journaled_in_its_queues_store(
    broker: pmsq.Broker, files: tuple[Path, Path]
) -> None:
    from pmsq.backends.types import HistoryEvent

    broker.declare_queue("payments")
    broker.declare_queue("email")

    def event(queue: str) -> HistoryEvent:
        return HistoryEvent(
            at=1_800_000_000.0,
            message_id="",
            queue=queue,
            tenant=None,
            key=None,
            correlation_id=None,
            event="operator",
            detail={"action": "pause"},
        )

    History.of(broker.backend).record([event("payments"), event("email")])
    main, pay = files
    with alone(main) as a, alone(pay) as p:
        here = History.of(a.backend).history(queue="email")
        there = History.of(p.backend).history(queue="payments")
        assert [(e.queue, e.event) for e in here] == [("email", "operator")]
        assert [(e.queue, e.event) for e in there] == [("payments", "operator")]
        assert History.of(a.backend).history(queue="payments") == []


def test_a_worker_serving_both_stores_is_one_live_worker_and_a_consumer_of_each(
    files: tuple[Path, Path],
) -> None:
    main, pay = files
    with pmsq.connect(str(main), routes={"payments.#": str(pay)}, durability="normal") as b:
        b.declare_queue("payments")
        b.declare_queue("email")
        b.handler("payments")(lambda msg: None)
        b.handler("email")(lambda msg: None)
        with pmsq.Worker(b, concurrency=2):
            (live,) = b.workers()
            assert live.queues == ("email", "payments")
            assert b.stats("payments").consumers == b.stats("email").consumers == 1
            # Each store holds the beat with only its own queues.
            with alone(main) as a, alone(pay) as p:
                assert [w.queues for w in a.workers()] == [("email",)]
                assert [w.queues for w in p.workers()] == [("payments",)]
        assert b.workers() == []
