"""The conformance suite of ``pmsq.testing`` against the RabbitMQ backend.

RabbitMQ's TTLs and redeliveries run on real time, while the suite drives a
``ManualClock``. What pmsq itself times on RabbitMQ (leases, held keyed
retries and delays) follows the clock; what the broker times (the TTL ladder
of unkeyed delays) does not. The tests that need the broker to travel in
time are listed in ``REAL_TIME_ONLY`` and skipped with that reason; the
plugin's own tests check the same behaviour on real time.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, ClassVar

import pytest

import pmsq
from pmsq.testing import BrokerConformance

# Unkeyed delays and delayed retries wait in TTL queues: the broker's clock.
REAL_TIME_ONLY = {
    "test_retry_uses_backoff_and_zero_delay_retries_at_once": "backoff waits in a TTL queue",
    "test_delay_holds_a_message_back": "an unkeyed delay waits in a TTL queue",
    "test_not_before_takes_an_aware_datetime_or_epoch_seconds": "delays wait in a TTL queue",
    "test_retry_raised_in_with_block_retries_and_propagates": "backoff waits in a TTL queue",
    "test_exception_in_with_block_retries_then_dead_letters_with_traceback": (
        "backoff waits in a TTL queue"
    ),
}


class TestRabbitMQConformance(BrokerConformance):
    missing_capabilities: ClassVar[frozenset[str]] = frozenset(
        {
            "per_key_fifo",
            "priorities",
            "dedup",
            "coalesce",
            "rate_limits",
            "tenant_fairness",
            "transactional_put",
            "exact_stats",
            "control",
        }
    )
    # Keyed messages come from N shard queues, unkeyed ones from the main queue.
    exact_claim_order = False

    @pytest.fixture(autouse=True)
    def _server(self, rabbitmq_url: str, request: pytest.FixtureRequest) -> None:
        self._url = rabbitmq_url
        name = request.node.originalname
        if name in REAL_TIME_ONLY:
            pytest.skip(
                f"RabbitMQ times this on real time, not the test's clock: {REAL_TIME_ONLY[name]}"
            )

    def _store_url(self) -> str:
        prefix = "c" + hashlib.sha1(self.store_id.encode(), usedforsecurity=False).hexdigest()[:16]
        return f"{self._url}?prefix={prefix}"

    def make_broker(self, clock: pmsq.ManualClock) -> pmsq.Broker:
        # Leases are compared with the clock; start it at real time so the
        # broker's real-time stamps (dead_at of broker dead letters) agree.
        if clock.time() < time.time() - 86400:
            clock.set(time.time())
        return pmsq.connect(self._store_url(), clock=clock)

    def drop_store(self) -> None:
        with pmsq.connect(self._store_url()) as b:
            b.backend.delete_all()  # type: ignore[attr-defined]

    # -- The model comparison -----------------------------------------------------------------
    _MODEL_SKIP = (
        "the state machine's model predicts strict per-key FIFO with every claimable key "
        "handed out at once, tenant-scoped claims, on_key_failure='block', max_depth and "
        "clock-driven delays; RabbitMQ declares per_key_fifo=False (one message per shard "
        "at a time), refuses the others and runs unkeyed delays on real time"
    )

    def test_behaves_like_the_model(self, broker: pmsq.Broker) -> None:
        pytest.skip(self._MODEL_SKIP)

    @pytest.mark.slow
    def test_behaves_like_the_model_long_run(self, broker: pmsq.Broker) -> None:
        pytest.skip(self._MODEL_SKIP)

    # -- Guarantees the backend refuses (not Capabilities flags): check the errors ----------
    def _refused(self, use: Any, words: str) -> None:
        with pytest.raises(pmsq.ConfigurationError, match="RabbitMQ") as info:
            use()
        assert words in str(info.value)

    def test_block_holds_the_key_until_redrive_which_returns_to_the_head(
        self, broker: pmsq.Broker, clock: pmsq.ManualClock
    ) -> None:
        self._refused(lambda: broker.declare_queue("calendar", on_key_failure="block"), "block")
        assert broker.queue_config("calendar").on_key_failure == "continue"

    def test_block_also_holds_the_key_after_a_lease_expiry_dead_letter(
        self, broker: pmsq.Broker, clock: pmsq.ManualClock
    ) -> None:
        self._refused(
            lambda: broker.declare_queue("calendar", on_key_failure="block", max_attempts=1),
            "block",
        )

    def test_block_purge_releases_the_key(self, broker: pmsq.Broker) -> None:
        self._refused(lambda: broker.declare_queue("calendar", on_key_failure="block"), "block")

    def test_put_many_stores_nothing_when_the_queue_fills_midway(self, broker: pmsq.Broker) -> None:
        self._refused(lambda: broker.declare_queue("imports", max_depth=3), "max_depth")

    def test_max_depth_raises_queue_full_until_space_frees(self, broker: pmsq.Broker) -> None:
        self._refused(lambda: broker.declare_queue("imports", max_depth=2), "max_depth")

    def test_tenant_quota_raises_queue_full_for_that_tenant_only(self, broker: pmsq.Broker) -> None:
        self._refused(lambda: broker.declare_queue("imports", tenant_quota=2), "tenant_quota")

    def test_declarations_are_stored_and_redeclaring_updates_them(
        self, broker: pmsq.Broker, clock: pmsq.ManualClock
    ) -> None:
        # The suite's version, minus the options RabbitMQ refuses (checked above).
        options: dict[str, Any] = {
            "max_attempts": 7,
            "lease": 12.5,
            "backoff": pmsq.Backoff(base=0.5, factor=3.0, cap=60.0, jitter=False),
            "fallback": "payments.fallback",
            "dedup_window": None,
        }
        broker.declare_queue("payments", **options)
        broker.declare_queue("email")
        broker.declare_queue("email", max_attempts=2)
        broker.queue("implicit")
        broker = self.reopen(broker, clock)
        stored = {c.name: c for c in broker.queues()}
        assert {"payments", "email", "implicit"} <= set(stored)
        assert {k: getattr(stored["payments"], k) for k in options} == options
        assert stored["email"].max_attempts == 2
        assert stored["implicit"].max_attempts == 5

    # -- Tenant-scoped consumers are refused; puts, dead letters and stats differ -------------
    def test_tenant_handle_sees_and_touches_only_its_tenant(self, broker: pmsq.Broker) -> None:
        broker.declare_queue("email")
        acme = broker.tenant("acme")
        mine = acme.queue("email").put("for acme")
        theirs = broker.queue("email").put("for globex", tenant="globex")
        self._refused(lambda: self.claim(acme.queue("email")), "one tenant")
        for d in self.claim(broker.queue("email")):
            assert d.message.tenant == {mine: "acme", theirs: "globex"}[d.message.id]
            d.dead_letter("bounced")
        assert [x.message.id for x in acme.dead_letters("email").list()] == [mine]
        assert acme.dead_letters("email").redrive([theirs]) == 0
        assert acme.dead_letters("email").purge([theirs]) == 0
        assert acme.dead_letters("email").purge() == 1
        assert [x.message.id for x in broker.dead_letters("email").list()] == [theirs]
        self._refused(lambda: acme.stats("email"), "per-tenant statistics")
        assert broker.stats("email").dead == 1

    # -- Leases live on the consumer's channel --------------------------------------------------
    def test_settled_and_unsettled_state_survives_reopen(
        self, broker: pmsq.Broker, clock: pmsq.ManualClock
    ) -> None:
        # On RabbitMQ a lease dies with its broker's connection: closing the broker
        # returns the in-flight message at once (one attempt spent), where SQLite
        # keeps the lease until it expires.
        q = broker.declare_queue("payments", lease=10.0, max_attempts=5, dedup_window=None)
        acked, flying, dead = (q.put({"n": i}) for i in range(3))
        by_id = {d.message.id: d for d in self.claim(q)}
        assert set(by_id) == {acked, flying, dead}
        by_id[acked].ack()
        by_id[dead].dead_letter("card declined")
        broker.subscribe("booking.*", queue="payments")
        broker = self.reopen(broker, clock)
        q = broker.queue("payments")
        assert q.config.max_attempts == 5
        assert q.config.dedup_window is None
        assert ("booking.*", "payments") in broker.bindings()
        assert [d.message.id for d in broker.dead_letters("payments").list()] == [dead]
        back = self.claim(q)
        assert [(d.message.id, d.message.attempt) for d in back] == [(flying, 2)]
        back[0].ack()
        assert self.claim(q) == []

    @pytest.mark.parametrize("other_claims", [False, True], ids=["untouched", "queue_busy"])
    def test_ack_after_lease_expiry_is_accepted_while_nobody_else_claimed(
        self, broker: pmsq.Broker, clock: pmsq.ManualClock, other_claims: bool
    ) -> None:
        # The suite makes "someone claims" a claim for another tenant, which RabbitMQ
        # refuses; a claim on another queue notices the expiry here just the same.
        q = broker.declare_queue("payments", lease=10.0, max_attempts=5)
        q.put({"n": 1}, tenant="acme")
        late = q.get(timeout=0)
        clock.advance(11.0)
        if other_claims:
            other = broker.queue("other")
            other.put({"n": 2})
            other.get(timeout=5).ack()
        late.ack()
        clock.advance(100.0)
        assert self.claim(q) == [], "an accepted ack must delete the message"

    def test_extend_after_lease_expiry_keeps_it_while_nobody_else_claimed(
        self, broker: pmsq.Broker, clock: pmsq.ManualClock
    ) -> None:
        q = broker.declare_queue("payments", lease=10.0, max_attempts=5)
        q.put({"n": 1}, tenant="acme")
        late = q.get(timeout=0)
        clock.advance(11.0)
        other = broker.queue("other")
        other.put({"n": 2})
        other.get(timeout=5).ack()
        late.extend(30.0)
        clock.advance(20.0)
        assert self.claim(q) == []
        late.ack()
