"""Conformance: durability, leases and tokens, attempts, retries and handler outcomes.

DESIGN.md "Delivery guarantees": Durable, At-least-once, Poison messages;
"Precise meanings": Attempts, Small print (``Retry``, redrive, ``dead_at``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest

from pmsq.broker import Broker
from pmsq.clock import ManualClock
from pmsq.config import Backoff
from pmsq.delivery import Delivery, settle_many
from pmsq.errors import Empty, LeaseLost, Reject, Retry
from pmsq.message import utc_from_epoch
from pmsq.policy import Ack, DeadLetterOutcome, RetryAt
from pmsq.testing._suite import SuiteBase

__all__ = ["DeliveryTests"]

_STALE_VERBS: dict[str, Callable[[Delivery], object]] = {
    "ack": lambda d: d.ack(),
    "retry": lambda d: d.retry(),
    "retry_at_once": lambda d: d.retry(delay=0),
    "dead_letter": lambda d: d.dead_letter("stale"),
    "extend": lambda d: d.extend(100.0),
}


class DeliveryTests(SuiteBase):
    """What happens to one message between put and its last settle."""

    # -- Durable -------------------------------------------------------------------
    def test_put_messages_survive_close_and_reopen(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        q = broker.declare_queue("payments", lease=10.0)
        put = {q.put({"n": i}, key="property:1" if i % 2 else None): {"n": i} for i in range(4)}
        q = self.reopen(broker, clock).queue("payments")
        got = {}
        while batch := q.get_many(1, timeout=0):
            got[batch[0].message.id] = batch[0].message.payload
            batch[0].ack()
        assert got == put

    def test_settled_and_unsettled_state_survives_reopen(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        caps = broker.backend.capabilities
        q = broker.declare_queue("payments", lease=10.0, max_attempts=5, dedup_window=None)
        acked, flying, dead = (q.put({"n": i}) for i in range(3))
        deduped = q.put({"n": 3}, dedup_id="once") if caps.dedup else None
        delayed = q.put({"n": 4}, delay=50.0) if caps.delays else None
        by_id = {d.message.id: d for d in self.claim(q)}
        assert set(by_id) == {acked, flying, dead, deduped} - {None}
        by_id[acked].ack()
        by_id[dead].dead_letter("card declined")
        if deduped is not None:
            by_id[deduped].ack()
        broker.subscribe("booking.*", queue="payments")

        broker = self.reopen(broker, clock)
        q = broker.queue("payments")
        assert q.config.max_attempts == 5
        assert q.config.dedup_window is None
        assert ("booking.*", "payments") in broker.bindings()
        assert [d.message.id for d in broker.dead_letters("payments").list()] == [dead]
        if deduped is not None:
            assert q.put({"n": 5}, dedup_id="once") == deduped
        assert self.claim(q) == [], "an in-flight lease, a dedup hit or a delay was lost"
        clock.advance(11.0)  # the un-acked delivery's lease runs out
        back = self.claim(q)
        assert [(d.message.id, d.message.attempt) for d in back] == [(flying, 2)]
        back[0].ack()
        if delayed is not None:
            clock.advance(50.0)
            assert self.drain_ids(q) == [delayed]
        assert self.claim(q) == []

    def test_acked_message_is_never_delivered_again(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        q = broker.declare_queue("payments", lease=10.0)
        q.put({"n": 1})
        q.get(timeout=0).ack()
        for _ in range(3):
            clock.advance(31.0)
            assert self.claim(q) == []
        if self.reopens:
            q = self.reopen(broker, clock).queue("payments")
            clock.advance(31.0)
            assert self.claim(q) == []

    # -- At-least-once and lease tokens -------------------------------------------------
    def test_unacked_message_comes_back_after_lease_expiry_with_next_attempt_and_new_token(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        q = broker.declare_queue("payments", lease=10.0)
        mid = q.put({"n": 1})
        first = q.get(timeout=0)
        assert (first.message.id, first.message.attempt) == (mid, 1)
        assert first.lease_expires == pytest.approx(clock.time() + 10.0)
        clock.advance(9.5)
        assert self.claim(q) == [], "redelivered while its lease still ran"
        clock.advance(1.0)
        second = q.get(timeout=0)
        assert (second.message.id, second.message.attempt) == (mid, 2)
        assert second.message.payload == {"n": 1}
        assert second.receipt != first.receipt, "a redelivery must carry a new lease token"

    @pytest.mark.parametrize("verb", sorted(_STALE_VERBS))
    def test_stale_token_raises_lease_lost_and_changes_nothing(
        self, broker: Broker, clock: ManualClock, verb: str
    ) -> None:
        q = broker.declare_queue("payments", lease=10.0, max_attempts=5)
        mid = q.put({"n": 1})
        stale = q.get(timeout=0)
        clock.advance(11.0)
        holder = q.get(timeout=0)  # someone else holds it now
        assert holder.message.id == mid
        with pytest.raises(LeaseLost):
            _STALE_VERBS[verb](stale)
        # Nothing changed: not deleted, not released, not dead, lease not moved.
        assert self.claim(q) == []
        assert broker.dead_letters("payments").list() == []
        clock.advance(10.5)  # the holder's own lease runs out on time
        third = q.get(timeout=0)
        assert (third.message.id, third.message.attempt) == (mid, 3)
        third.ack()
        with pytest.raises(LeaseLost):
            holder.ack()

    @pytest.mark.parametrize("other_claims", [False, True], ids=["untouched", "queue_busy"])
    def test_ack_after_lease_expiry_is_accepted_while_nobody_else_claimed(
        self, broker: Broker, clock: ManualClock, other_claims: bool
    ) -> None:
        # DESIGN: a token is stale when the lease expired *and someone else holds it now*.
        q = broker.declare_queue("payments", lease=10.0, max_attempts=5)
        q.put({"n": 1}, tenant="acme")
        late = q.get(timeout=0)
        clock.advance(11.0)
        if other_claims:
            # Claims on the same queue (another tenant's message) notice the expiry.
            q.put({"n": 2}, tenant="globex")
            other = broker.tenant("globex").queue("payments").get(timeout=0)
            assert other.message.tenant == "globex"
            other.ack()
        late.ack()
        clock.advance(100.0)
        assert self.claim(q) == [], "an accepted ack must delete the message"

    def test_extend_after_lease_expiry_keeps_it_while_nobody_else_claimed(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        q = broker.declare_queue("payments", lease=10.0, max_attempts=5)
        q.put({"n": 1}, tenant="acme")
        late = q.get(timeout=0)
        clock.advance(11.0)
        q.put({"n": 2}, tenant="globex")
        broker.tenant("globex").queue("payments").get(timeout=0).ack()
        late.extend(30.0)
        clock.advance(20.0)
        assert self.claim(q) == []
        late.ack()

    def test_extend_keeps_the_lease(self, broker: Broker, clock: ManualClock) -> None:
        q = broker.declare_queue("payments", lease=10.0)
        q.put({"n": 1})
        d = q.get(timeout=0)
        clock.advance(8.0)
        d.extend(10.0)
        assert d.lease_expires == pytest.approx(clock.time() + 10.0)
        clock.advance(8.0)  # 16 s after the claim: past the original lease
        assert self.claim(q) == [], "an extended lease was treated as expired"
        d.ack()
        clock.advance(100.0)
        assert self.claim(q) == []

    def test_a_batch_of_settlements_keeps_each_outcome(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        # Workers settle a round of finished handlers with one settle_many call.
        q = broker.declare_queue("payments", lease=10.0, max_attempts=5)
        q.put_many([{"n": n} for n in range(4)])
        held: list[Delivery] = []
        for _ in range(10):
            held += self.claim(q, 4 - len(held)) if len(held) < 4 else []
        stale, ack, retry, bury = sorted(held, key=lambda d: d.message.payload["n"])
        clock.advance(11.0)
        holder = q.get(timeout=0)  # the first one belongs to someone else now
        assert holder.message.id == stale.message.id
        errors = settle_many(
            [
                (stale, Ack(), 1.0),
                (ack, Ack(), 1.0),
                (retry, RetryAt(at=clock.time(), error_type="E", error="e"), 1.0),
                (bury, DeadLetterOutcome(reason="bad data"), 1.0),
            ]
        )
        assert isinstance(errors[0], LeaseLost)
        assert errors[1:] == [None, None, None]
        assert [d.settled for d in (stale, ack, retry, bury)] == [
            "lost",
            "acked",
            "retried",
            "dead",
        ]
        assert [dl.message.id for dl in broker.dead_letters("payments").list()] == [bury.message.id]
        holder.ack()
        again = q.get(timeout=5)
        assert (again.message.id, again.message.attempt) == (retry.message.id, 2)
        again.ack()
        clock.advance(100.0)
        assert self.claim(q) == [], "an acked message came back"

    def test_settling_twice_raises_lease_lost(self, broker: Broker) -> None:
        q = broker.declare_queue("payments")
        q.put({"n": 1})
        d = q.get(timeout=0)
        d.ack()
        for again in (d.ack, d.retry, lambda: d.dead_letter("x"), lambda: d.extend(5.0)):
            with pytest.raises(LeaseLost):
                again()

    def test_release_hands_back_without_spending_an_attempt(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        q = broker.declare_queue("payments", max_attempts=1)
        mid = q.put({"n": 1})
        q.get(timeout=0).release()
        d = q.get(timeout=0)
        assert (d.message.id, d.message.attempt) == (mid, 1)
        d.ack()

    def test_get_raises_empty_and_get_many_returns_an_empty_list(self, broker: Broker) -> None:
        q = broker.declare_queue("payments")
        with pytest.raises(Empty):
            q.get(timeout=0)
        assert q.get_many(5, timeout=0) == []

    # -- Poison messages and attempts -----------------------------------------------------
    def test_lease_expiry_counts_an_attempt_and_poison_is_dead_lettered(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        q = broker.declare_queue("payments", lease=10.0, max_attempts=3)
        mid = q.put({"n": 1})
        for attempt in (1, 2, 3):
            d = q.get(timeout=0)  # the worker dies: never settled
            assert (d.message.id, d.message.attempt) == (mid, attempt)
            clock.advance(11.0)
        expired_at = clock.time() - 1.0
        assert self.claim(q) == []
        [dl] = broker.dead_letters("payments").list()
        assert dl.message.id == mid
        assert dl.attempts == 3
        assert dl.reason, "a lease-expiry dead letter must say why"
        assert dl.error_type, "a lease-expiry dead letter must name its cause"
        assert utc_from_epoch(expired_at) <= dl.dead_at <= utc_from_epoch(clock.time())

    def test_retry_uses_backoff_and_zero_delay_retries_at_once(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        if self.lacks(broker, "delays", lambda: broker.queue("probe").put(1, delay=5.0)):
            return
        q = broker.declare_queue(
            "payments", max_attempts=4, backoff=Backoff(base=2.0, factor=3.0, jitter=False)
        )
        mid = q.put({"n": 1})
        q.get(timeout=0).retry()  # first retry: 2 s
        clock.advance(1.5)
        assert self.claim(q) == []
        clock.advance(0.5)
        d = q.get(timeout=0)
        assert (d.message.id, d.message.attempt) == (mid, 2)
        d.retry()  # second retry: 6 s
        clock.advance(5.5)
        assert self.claim(q) == []
        clock.advance(0.5)
        d = q.get(timeout=0)
        assert d.message.attempt == 3
        d.retry(delay=0)
        d = q.get(timeout=0)
        assert d.message.attempt == 4

    def test_retry_on_the_last_attempt_dead_letters(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        q = broker.declare_queue("payments", max_attempts=2)
        mid = q.put({"n": 1})
        q.get(timeout=0).retry(delay=0)
        last = q.get(timeout=0)
        assert last.message.attempt == 2
        last.retry(delay=0)
        clock.advance(1000.0)
        assert self.claim(q) == []
        [dl] = broker.dead_letters("payments").list()
        assert (dl.message.id, dl.attempts) == (mid, 2)
        assert dl.reason

    # -- Handler outcomes through ``with q.get() as d:`` ----------------------------------
    def test_with_block_acks_on_normal_exit(self, broker: Broker, clock: ManualClock) -> None:
        q = broker.declare_queue("payments")
        q.put({"n": 1})
        with q.get(timeout=0) as d:
            assert d.message.payload == {"n": 1}
        assert d.settled == "acked"
        clock.advance(1000.0)
        assert self.claim(q) == []

    def test_retry_raised_in_with_block_retries_and_propagates(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        q = broker.declare_queue(
            "payments", max_attempts=5, backoff=Backoff(base=2.0, factor=2.0, jitter=False)
        )
        mid = q.put({"n": 1})
        with pytest.raises(Retry), q.get(timeout=0):
            raise Retry(delay=0)
        d = q.get(timeout=0)
        assert (d.message.id, d.message.attempt) == (mid, 2)
        with pytest.raises(Retry), d:
            raise Retry()  # the queue's backoff after attempt 2: base * factor = 4 s
        if broker.backend.capabilities.delays:
            clock.advance(3.5)
            assert self.claim(q) == []
        clock.advance(0.5)
        assert q.get(timeout=0).message.attempt == 3

    def test_reject_raised_in_with_block_dead_letters_at_once_and_propagates(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        q = broker.declare_queue("payments", max_attempts=5)
        mid = q.put({"n": 1})
        with pytest.raises(Reject), q.get(timeout=0):
            raise Reject("card number is malformed")
        clock.advance(1000.0)
        assert self.claim(q) == []
        [dl] = broker.dead_letters("payments").list()
        assert (dl.message.id, dl.reason, dl.attempts) == (mid, "card number is malformed", 1)

    def test_exception_in_with_block_retries_then_dead_letters_with_traceback(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        q = broker.declare_queue(
            "payments", max_attempts=2, backoff=Backoff(base=1.0, factor=2.0, jitter=False)
        )
        mid = q.put({"n": 1})
        for attempt in (1, 2):
            d = q.get(timeout=0)
            assert d.message.attempt == attempt
            with pytest.raises(ValueError, match=f"boom {attempt}"), d:
                raise ValueError(f"boom {attempt}")
            failed_at = clock.time()
            clock.advance(1.0)
        assert self.claim(q) == []
        [dl] = broker.dead_letters("payments").list()
        assert (dl.message.id, dl.attempts, dl.error_type) == (mid, 2, "ValueError")
        assert dl.traceback is not None
        assert "Traceback" in dl.traceback
        assert "ValueError: boom 2" in dl.traceback
        assert dl.dead_at.utcoffset() == dt.timedelta(0)
        assert dl.dead_at == utc_from_epoch(failed_at)
        assert "boom 2" in dl.reason
