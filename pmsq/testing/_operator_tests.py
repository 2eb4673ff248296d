"""Conformance: what operators and handlers read back.

DESIGN.md "Precise meanings": Messages (fields, attempts, ``enqueued_at``,
correlation and causation), Dead letters (list, redrive, purge, fallback),
Queues (stored declarations, thread safety), Stats; "Backends and plugins":
declared capabilities; the transactional outbox (``connection=``).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import pytest

from pmsq.backends.base import Capabilities
from pmsq.backends.families import FAMILIES, History
from pmsq.broker import Broker
from pmsq.clock import ManualClock
from pmsq.config import Backoff, RateLimit
from pmsq.message import utc_from_epoch
from pmsq.testing._suite import SuiteBase

__all__ = ["OperatorTests"]


class OperatorTests(SuiteBase):
    """Dead letters, fallback queues, message fields, stats and declarations."""

    # -- Dead letters --------------------------------------------------------------------
    def test_dead_letters_list_redrive_and_purge_by_id_or_all(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        q = broker.declare_queue("email", max_attempts=3)
        ids = [q.put({"n": i}) for i in range(4)]
        for d in self.claim(q):
            d.dead_letter(f"bounced {d.message.payload['n']}")
            clock.advance(1.0)
        dead = broker.dead_letters("email")
        listed = dead.list()
        assert [x.message.id for x in listed] == ids, "oldest first"
        assert [x.reason for x in listed] == [f"bounced {i}" for i in range(4)]
        assert all(x.attempts == 1 and x.dead_at.utcoffset() == dt.timedelta(0) for x in listed)
        assert [x.message.id for x in dead.list(limit=2)] == ids[:2]
        assert dead.redrive([ids[0], "no-such-id"]) == 1
        assert dead.purge([ids[1]]) == 1
        assert [x.message.id for x in dead.list()] == ids[2:]
        back = self.claim(q)
        assert [(d.message.id, d.message.attempt) for d in back] == [(ids[0], 1)]
        back[0].ack()
        assert dead.redrive() == 2
        assert dead.list() == []
        assert sorted(self.drain_ids(q)) == sorted(ids[2:])
        assert dead.purge() == 0

    def test_a_redriven_message_starts_again_at_attempt_one(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        q = broker.declare_queue("email", max_attempts=2)
        mid = q.put("x")
        q.get(timeout=0).retry(delay=0)
        q.get(timeout=0).retry(delay=0)  # the last attempt: dead
        [dl] = broker.dead_letters("email").list()
        assert dl.attempts == 2
        broker.dead_letters("email").redrive()
        for attempt in (1, 2):
            d = q.get(timeout=0)
            assert (d.message.id, d.message.attempt) == (mid, attempt)
            d.retry(delay=0)
        assert [x.attempts for x in broker.dead_letters("email").list()] == [2]

    def test_fallback_queue_gets_a_copy_naming_the_dead_letter(self, broker: Broker) -> None:
        q = broker.declare_queue("email", fallback="sms")
        mid = q.put({"guest": 7}, key="guest:7", tenant="acme", headers={"lang": "de"})
        q.get(timeout=0).dead_letter("mailbox full")
        [copy] = self.claim(broker.queue("sms"))
        m = copy.message
        assert m.id != mid
        assert m.queue == "sms"
        assert (m.payload, m.key, m.tenant) == ({"guest": 7}, "guest:7", "acme")
        assert m.headers["lang"] == "de"
        assert m.headers["pmsq.dead_letter"] == {
            "queue": "email",
            "message_id": mid,
            "reason": "mailbox full",
        }
        assert [x.message.id for x in broker.dead_letters("email").list()] == [mid]

    # -- Message fields -----------------------------------------------------------------
    def test_message_fields_round_trip(self, broker: Broker, clock: ManualClock) -> None:
        caps = broker.backend.capabilities
        q = broker.declare_queue("email", lease=10.0, max_attempts=9)
        put_at = clock.time()
        headers = {"trace": "abc", "nested": {"a": [1, 2]}, "ü": "ß"}
        mid = q.put(
            {"guest": "Zoë", "nights": [1, 2], "paid": True, "note": None, "rate": 1.5},
            key="guest:7",
            tenant="acme",
            priority=3 if caps.priorities else 0,
            headers=headers,
            dedup_id="mail-7" if caps.dedup else None,
        )
        clock.advance(5.0)
        d = q.get(timeout=0)
        m = d.message
        assert m.id == mid
        assert m.queue == "email"
        assert m.payload == {
            "guest": "Zoë",
            "nights": [1, 2],
            "paid": True,
            "note": None,
            "rate": 1.5,
        }
        assert (m.key, m.tenant, m.headers) == ("guest:7", "acme", headers)
        assert m.priority == (3 if caps.priorities else 0)
        assert m.dedup_id == ("mail-7" if caps.dedup else None)
        assert m.topic is None
        assert m.attempt == 1
        assert m.enqueued_at == utc_from_epoch(put_at)
        assert m.enqueued_at.utcoffset() == dt.timedelta(0)
        # Every delivery counts, whatever ended the previous one.
        d.retry(delay=0)
        d = q.get(timeout=0)
        assert (d.message.id, d.message.attempt, d.message.enqueued_at) == (mid, 2, m.enqueued_at)
        clock.advance(11.0)  # lease expiry
        d = q.get(timeout=0)
        assert d.message.attempt == 3
        with pytest.raises(RuntimeError), d:
            raise RuntimeError("handler failed")
        clock.advance(1000.0)
        assert q.get(timeout=0).message.attempt == 4

    def test_bytes_payload_passes_through(self, broker: Broker) -> None:
        q = broker.declare_queue("files")
        raw = bytes(range(256))
        q.put(raw)
        [d] = self.claim(q)
        assert type(d.message.payload) is bytes
        assert d.message.payload == raw

    @pytest.mark.parametrize(
        "payload",
        [{"a": {"b": [1, 2.5, None, True]}}, [1, "two", {"3": 4}], "text ✓", 42, None, []],
        ids=["object", "array", "string", "number", "null", "empty"],
    )
    def test_json_payload_round_trips(self, broker: Broker, payload: Any) -> None:
        q = broker.declare_queue("json")
        q.put(payload)
        [d] = self.claim(q)
        assert d.message.payload == payload

    def test_correlation_and_causation_follow_the_chain(self, broker: Broker) -> None:
        q = broker.declare_queue("work")
        root = q.put("root")
        with q.get(timeout=0) as d:
            assert (d.message.correlation_id, d.message.causation_id) == (root, None)
            child = q.put("child")
        with q.get(timeout=0) as d:
            assert d.message.id == child
            assert (d.message.correlation_id, d.message.causation_id) == (root, root)
            grandchild = q.put("grandchild")
        d = q.get(timeout=0)
        assert d.message.id == grandchild
        assert (d.message.correlation_id, d.message.causation_id) == (root, child)
        d.ack()
        outside = q.put("outside")
        d = q.get(timeout=0)
        assert (d.message.correlation_id, d.message.causation_id) == (outside, None)

    def test_fan_out_copies_share_one_correlation_id(self, broker: Broker) -> None:
        broker.subscribe("booking.#", queue="calendar")
        broker.subscribe("booking.#", queue="email")
        ids = broker.publish("booking.created", "x")
        messages = [
            d.message for name in ("calendar", "email") for d in self.claim(broker.queue(name))
        ]
        assert {m.correlation_id for m in messages} in ({ids[0]}, {ids[1]})

    # -- Stats -------------------------------------------------------------------------
    def test_stats_count_each_state_and_outcome(self, broker: Broker, clock: ManualClock) -> None:
        self.skip_unless(broker, "exact_stats")
        caps = broker.backend.capabilities
        q = broker.declare_queue(
            "email", max_attempts=2, lease=10.0, backoff=Backoff(base=1.0, jitter=False)
        )
        q.put("a1", tenant="acme")
        q.put("a2", tenant="acme")
        q.put("g1", tenant="globex")
        if caps.delays:
            q.put("later", tenant="globex", delay=100.0)
        clock.advance(7.0)
        s = broker.stats("email")
        assert (s.ready, s.in_flight, s.dead) == (3, 0, 0)
        assert s.delayed == (1 if caps.delays else 0)
        assert s.oldest_age == pytest.approx(7.0)
        assert s.tenants["acme"].ready == 2
        assert s.tenants["globex"].ready == 1

        by_payload = {d.message.payload: d for d in self.claim(q)}
        s = broker.stats("email")
        assert (s.ready, s.in_flight) == (0, 3)
        by_payload["a1"].ack()
        by_payload["a2"].dead_letter("bad")
        with pytest.raises(KeyError), by_payload["g1"]:
            raise KeyError("flaky")  # failed and retried
        s = broker.stats("email")
        assert (s.processed, s.failed, s.retried, s.dead_lettered) == (1, 1, 1, 1)
        assert s.dead == 1
        assert s.in_flight == 0
        assert (s.tenants["acme"].processed, s.tenants["acme"].dead) == (1, 1)
        assert (s.tenants["globex"].failed, s.tenants["globex"].retried) == (1, 1)
        assert broker.stats().queues["email"].dead == 1
        assert broker.tenant("acme").stats("email").dead == 1
        assert broker.tenant("globex").stats("email").dead == 0

    def test_lease_expiry_counts_as_failed_and_retried(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        self.skip_unless(broker, "exact_stats")
        q = broker.declare_queue("email", lease=10.0, max_attempts=2)
        q.put("x")
        q.get(timeout=0)
        clock.advance(11.0)
        q.get(timeout=0)
        clock.advance(11.0)
        assert self.claim(q) == []
        s = broker.stats("email")
        assert (s.failed, s.retried, s.dead_lettered, s.dead, s.depth) == (2, 1, 1, 1, 0)

    # -- Declarations, capabilities, threads -------------------------------------------------
    def test_declarations_are_stored_and_redeclaring_updates_them(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        options: dict[str, Any] = {
            "max_attempts": 7,
            "lease": 12.5,
            "backoff": Backoff(base=0.5, factor=3.0, cap=60.0, jitter=False),
            "fallback": "payments.fallback",
            "on_key_failure": "block",
            "dedup_window": None,
            "max_depth": 1000,
            "tenant_quota": 100,
        }
        if broker.backend.capabilities.rate_limits:
            options["rate_limit"] = RateLimit(5, per=2.0, scope="tenant")
        broker.declare_queue("payments", **options)
        broker.declare_queue("email")
        broker.declare_queue("email", max_attempts=2)
        broker.queue("implicit")
        if self.reopens:
            broker = self.reopen(broker, clock)
        stored = {c.name: c for c in broker.queues()}
        assert {"payments", "email", "implicit"} <= set(stored)
        got = {k: getattr(stored["payments"], k) for k in options}
        assert got == options
        assert stored["email"].max_attempts == 2
        assert stored["implicit"].max_attempts == 5  # the defaults

    def test_declared_capabilities_match_the_backend(self, broker: Broker) -> None:
        backend = broker.backend
        caps = backend.capabilities
        assert isinstance(caps, Capabilities)
        told = set(self.missing_capabilities)
        unknown = told - set(Capabilities.flags()) - set(Capabilities.family_names())
        assert not unknown, f"missing_capabilities names no capability: {sorted(unknown)}"
        # Every semantic flag the backend lacks must be listed, and only those.
        missing = {name for name in Capabilities.flags() if not getattr(caps, name)}
        assert missing == told & set(Capabilities.flags()), (
            f"the backend declares {sorted(missing)} missing, the suite was told "
            f"{sorted(told & set(Capabilities.flags()))}"
        )
        # Families are optional: one listed as missing must be absent, and the
        # report must match the class (it is derived from it, so it cannot lie).
        for family in FAMILIES:
            assert (family.capability in caps.families) == isinstance(backend, family)
            if family.capability in told:
                assert not getattr(caps, family.capability), (
                    f"{family.capability} is listed as missing but the backend implements it"
                )

    def test_history_is_kept_or_refused_clearly(self, broker: Broker) -> None:
        q = broker.declare_queue("traced")
        mid = q.put("x")
        if self.lacks(
            broker, "history", lambda: History.of(broker.backend).history(message_id=mid)
        ):
            return
        with q.get(timeout=0):
            pass
        events = History.of(broker.backend).history(message_id=mid)
        assert [e.event for e in events] == ["put", "delivered", "acked"]
        assert all(e.queue == "traced" for e in events)

    def test_transactional_put_commits_and_rolls_back_with_the_app(self, broker: Broker) -> None:
        q = broker.declare_queue("outbox")
        if self.lacks(broker, "transactional_put", lambda: q.put("x", connection=object())):
            return
        rolled_back = self.app_transaction(broker, commit=False)
        if rolled_back is None:
            pytest.skip("no app_transaction hook for this backend")
        with rolled_back as conn:
            q.put("lost with the app's rollback", connection=conn)
        assert self.claim(q) == []
        with self.app_transaction(broker, commit=True) as conn:
            mid = q.put("committed with the app", connection=conn)
        assert self.ids(self.claim(q)) == [mid]

    def test_a_broker_shared_between_threads_delivers_each_message_once(
        self, broker: Broker
    ) -> None:
        q = broker.declare_queue("shared", lease=3600.0)
        producers, per_producer, consumers = 4, 50, 3
        acked: list[str] = []
        lock = threading.Lock()
        errors: list[BaseException] = []
        done = threading.Event()

        def produce(p: int) -> None:
            try:
                for i in range(per_producer):
                    q.put({"p": p, "i": i}, key=f"producer:{p}")
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        def consume() -> None:
            try:
                deadline = time.monotonic() + 60.0
                while not done.is_set() and time.monotonic() < deadline:
                    for d in q.get_many(5, timeout=0.05):
                        d.ack()
                        with lock:
                            acked.append(d.message.id)
                            if len(acked) >= producers * per_producer:
                                done.set()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
        threads += [threading.Thread(target=consume) for _ in range(consumers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120.0)
        assert not errors, errors
        assert len(acked) == producers * per_producer
        assert len(set(acked)) == len(acked), "a message was delivered twice"
