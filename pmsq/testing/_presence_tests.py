"""Conformance: worker presence and the "is my queue backed up?" figures.

Presence (``pmsq.backends.presence``) is a family: a backend without it
must refuse ``broker.workers()`` with a ``ConfigurationError`` naming
``presence``, and report ``consumers`` as ``None`` (unknown), never ``0``.
The lateness figures (``oldest_age`` from the due time, ``wait_p50_ms`` /
``wait_p95_ms``, ``put_per_minute``, ``eta``) are checked against the
manual clock wherever the backend declares exact stats.
"""

from __future__ import annotations

import math

import pytest

from pmsq.backends.presence import FORGET_AFTER, LIVE_WINDOW, Presence, WorkerBeat
from pmsq.broker import Broker
from pmsq.clock import ManualClock
from pmsq.config import Backoff
from pmsq.message import Message
from pmsq.testing._suite import SuiteBase
from pmsq.worker import Worker

__all__ = ["PresenceTests"]


def _beat(worker_id: str, queues: tuple[str, ...], at: float, started: float = 0.0) -> WorkerBeat:
    return WorkerBeat(
        id=worker_id,
        queues=queues,
        concurrency=4,
        host="pms-1",
        pid=4242,
        started_at=started or at,
        last_seen=at,
    )


class PresenceTests(SuiteBase):
    """Heartbeats, live workers, ``consumers``, lateness and throughput figures."""

    # -- presence ------------------------------------------------------------------------
    def test_a_heartbeat_is_live_for_the_window_then_not(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        if self.lacks(broker, "presence", broker.workers):
            # Unknown (None), or the backend's own count (RabbitMQ's claiming
            # processes): never a made-up worker while none runs.
            assert broker.stats("email").consumers in (None, 0)
            return
        store = Presence.of(broker.backend)
        start = clock.time()
        store.beat_worker(_beat("w1", ("email", "sms"), start))
        (info,) = broker.workers()
        assert (info.id, info.queues, info.concurrency, info.host, info.pid) == (
            "w1",
            ("email", "sms"),
            4,
            "pms-1",
            4242,
        )
        assert info.started_at.timestamp() == pytest.approx(start)
        assert info.started_at.utcoffset() is not None
        clock.advance(LIVE_WINDOW)
        assert [w.id for w in broker.workers()] == ["w1"], "live through the whole window"
        clock.advance(1.0)
        assert broker.workers() == [], "silent past the window: not live"
        store.beat_worker(_beat("w1", ("email", "sms"), clock.time(), started=start))
        (info,) = broker.workers()
        assert info.last_seen.timestamp() == pytest.approx(clock.time())
        assert info.started_at.timestamp() == pytest.approx(start), "a beat keeps started_at"
        assert store.forget_worker("w1") is True
        assert broker.workers() == []
        assert store.forget_worker("w1") is False

    def test_rows_of_long_silent_workers_are_deleted_by_other_beats(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        if self.lacks(broker, "presence", broker.workers):
            return
        store = Presence.of(broker.backend)
        store.beat_worker(_beat("killed", ("email",), clock.time()))
        clock.advance(FORGET_AFTER + 1)
        store.beat_worker(_beat("alive", ("email",), clock.time()))
        assert [b.id for b in store.list_workers(since=-math.inf)] == ["alive"]

    def test_consumers_count_live_workers_per_queue_and_tenant(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        if self.lacks(broker, "presence", broker.workers):
            return
        for name in ("email", "sms", "calendar"):
            broker.declare_queue(name)
        broker.queue("email").put("x", tenant="acme")
        store = Presence.of(broker.backend)
        store.beat_worker(_beat("a", ("email", "sms"), clock.time()))
        store.beat_worker(_beat("b", ("email",), clock.time()))
        snap = broker.stats()
        assert {n: snap.queues[n].consumers for n in ("email", "sms", "calendar")} == {
            "email": 2,
            "sms": 1,
            "calendar": 0,
        }
        assert snap.queues["email"].tenants["acme"].consumers == 2
        assert broker.stats("sms").consumers == 1
        assert broker.tenant("acme").stats().queues["email"].consumers == 2
        clock.advance(LIVE_WINDOW + 1)
        assert broker.stats("email").consumers == 0

    def test_a_running_worker_is_present_until_it_stops(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        broker.declare_queue("email")

        @broker.handler("email")
        def send(msg: Message) -> None:
            pass

        if self.lacks(broker, "presence", broker.workers):
            return
        worker = Worker(broker, concurrency=3)
        worker.start()
        try:
            # start() writes the first beat before it returns.
            (info,) = broker.workers()
            assert (info.queues, info.concurrency) == (("email",), 3)
            assert broker.stats("email").consumers == 1
        finally:
            worker.stop(timeout=10.0)
        assert broker.workers() == [], "a graceful stop removes the worker at once"
        assert Presence.of(broker.backend).list_workers(since=-math.inf) == []

    # -- lateness and throughput ---------------------------------------------------------
    def test_oldest_age_counts_from_the_due_time(self, broker: Broker, clock: ManualClock) -> None:
        self.skip_unless(broker, "exact_stats")
        self.skip_unless(broker, "delays")
        q = broker.declare_queue("reminders")
        q.put({"check_in": "in two weeks"}, delay=14 * 86400.0)
        clock.advance(600.0)
        s = broker.stats("reminders")
        assert (s.ready, s.delayed, s.oldest_age) == (0, 1, None), "scheduled is not late"
        q.put({"when": "in 100 s"}, delay=100.0)
        clock.advance(160.0)
        assert broker.stats("reminders").oldest_age == pytest.approx(60.0), "late since due"
        q.put({"when": "now"}, tenant="acme")
        clock.advance(5.0)
        s = broker.stats("reminders")
        assert s.oldest_age == pytest.approx(65.0)
        assert s.tenants["acme"].oldest_age == pytest.approx(5.0)

    def test_a_retry_waiting_for_its_backoff_is_not_late(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        self.skip_unless(broker, "exact_stats")
        self.skip_unless(broker, "delays")
        q = broker.declare_queue("sms", backoff=Backoff(base=300.0, jitter=False))
        q.put("hello")
        clock.advance(50.0)
        (d,) = self.claim(q)
        d.retry()
        clock.advance(100.0)
        assert broker.stats("sms").oldest_age is None
        clock.advance(220.0)  # the backoff ended 20 s ago
        assert broker.stats("sms").oldest_age == pytest.approx(20.0)

    def test_wait_percentiles_count_first_deliveries_of_the_last_minute(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        self.skip_unless(broker, "exact_stats")
        q = broker.declare_queue("email")
        assert broker.stats("email").wait_p50_ms is None
        for i in range(4):
            q.put({"n": i})
        clock.advance(1.5)
        got = self.claim(q)
        assert len(got) == 4
        s = broker.stats("email")
        # Histogram buckets: 1.5 s lies in (1000, 2000] ms.
        assert s.wait_p50_ms is not None
        assert 1000.0 < s.wait_p50_ms <= 2000.0
        assert s.wait_p95_ms is not None
        assert 1000.0 < s.wait_p95_ms <= 2000.0
        for d in got:
            d.retry(delay=0)
        clock.advance(600.0)
        again = self.claim(q)
        assert len(again) == 4
        # A redelivery is not a first delivery; a minute later the old ones fall out.
        assert broker.stats("email").wait_p95_ms is None

    def test_put_per_minute_and_eta(self, broker: Broker, clock: ManualClock) -> None:
        self.skip_unless(broker, "exact_stats")
        q = broker.declare_queue("calendar")
        for i in range(5):
            q.put({"n": i})
        s = broker.stats("calendar")
        assert s.put_per_minute == 5
        assert s.eta is None, "no acks in the last minute: no rate to drain at"
        for d in self.claim(q, 2):
            d.ack()
        s = broker.stats("calendar")
        assert (s.ready, s.processed_per_minute) == (3, 2)
        assert s.eta == pytest.approx(3 * 60.0 / 2)
        clock.advance(120.0)
        s = broker.stats("calendar")
        assert (s.put_per_minute, s.eta) == (0, None)
