"""Conformance: which message comes next.

DESIGN.md "Delivery guarantees": Per-key FIFO (with ``on_key_failure``),
Priority, Delay, Fairness across tenants, Rate limits; "Precise meanings":
Keys (scoped per queue and tenant; a delayed message holds back its key;
a redriven dead letter returns to the head of a blocked key).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest

from pmsq.broker import Broker
from pmsq.clock import ManualClock
from pmsq.config import RateLimit
from pmsq.errors import ConfigurationError
from pmsq.message import NewMessage, utc_from_epoch
from pmsq.testing._suite import SuiteBase

__all__ = ["OrderTests"]


class OrderTests(SuiteBase):
    """Per-key order, priority, delays, fairness and rate limits."""

    # -- Per-key FIFO ----------------------------------------------------------------
    def test_messages_of_a_key_come_one_at_a_time_in_put_order(self, broker: Broker) -> None:
        q = broker.declare_queue("calendar")
        ids = [q.put({"n": i}, key="property:4521") for i in range(5)]
        seen = []
        for mid in ids:
            batch = self.claim(q)
            assert self.ids(batch) == [mid], "exactly the key's next message, and only it"
            seen.append(batch[0].message.payload["n"])
            batch[0].ack()
        assert seen == [0, 1, 2, 3, 4]

    def test_next_of_a_key_waits_while_an_earlier_one_is_in_flight(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        q = broker.declare_queue("calendar", lease=30.0)
        booking = q.put("booking", key="property:1")
        cancel = q.put("cancel", key="property:1")
        loose = q.put("newsletter")
        other = q.put("booking", key="property:2")
        first = self.claim(q)
        assert set(self.ids(first)) == {booking, loose, other}, "other keys and no key flow"
        clock.advance(29.0)
        assert self.claim(q) == [], "the cancellation overtook its booking"
        next(d for d in first if d.message.id == booking).ack()
        assert self.ids(self.claim(q)) == [cancel]

    def test_next_of_a_key_waits_while_an_earlier_one_waits_to_be_retried(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        q = broker.declare_queue("calendar")
        booking = q.put("booking", key="property:1")
        cancel = q.put("cancel", key="property:1")
        delays = broker.backend.capabilities.delays
        q.get(timeout=0).retry(delay=10.0 if delays else 0)
        if delays:
            assert self.claim(q) == [], "the key moved on while its head waited for a retry"
            clock.advance(10.0)
        again = self.claim(q)
        assert [(d.message.id, d.message.attempt) for d in again] == [(booking, 2)]
        again[0].ack()
        assert self.ids(self.claim(q)) == [cancel]

    def test_keys_are_scoped_per_tenant_and_per_queue(self, broker: Broker) -> None:
        calendar = broker.declare_queue("calendar")
        email = broker.declare_queue("email")
        acme = calendar.put("a", key="property:1", tenant="acme")
        globex = calendar.put("g", key="property:1", tenant="globex")
        calendar.put("a2", key="property:1", tenant="acme")
        mail = email.put("m", key="property:1", tenant="acme")
        assert set(self.ids(self.claim(calendar))) == {acme, globex}
        assert self.ids(self.claim(email)) == [mail]

    def test_continue_moves_the_key_on_after_a_dead_letter(self, broker: Broker) -> None:
        q = broker.declare_queue("calendar", on_key_failure="continue")
        q.put("booking", key="property:1")
        cancel = q.put("cancel", key="property:1")
        q.get(timeout=0).dead_letter("bad booking")
        assert self.ids(self.claim(q)) == [cancel]

    def test_block_holds_the_key_until_redrive_which_returns_to_the_head(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        q = broker.declare_queue("calendar", on_key_failure="block")
        booking = q.put("booking", key="property:1")
        change = q.put("change", key="property:1")
        cancel = q.put("cancel", key="property:1")
        q.get(timeout=0).dead_letter("channel manager down")
        free = q.put("other", key="property:2")
        flowing = self.claim(q)
        assert self.ids(flowing) == [free], "a blocked key must not block other keys"
        flowing[0].ack()
        for _ in range(3):
            clock.advance(1000.0)
            assert self.claim(q) == [], "a blocked key moved on by itself"
        assert broker.dead_letters("calendar").redrive([booking]) == 1
        back = self.claim(q)
        assert [(d.message.id, d.message.attempt) for d in back] == [(booking, 1)]
        back[0].ack()
        assert self.drain_ids(q) == [change, cancel]

    def test_block_also_holds_the_key_after_a_lease_expiry_dead_letter(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        q = broker.declare_queue("calendar", on_key_failure="block", max_attempts=1, lease=10.0)
        booking = q.put("booking", key="property:1")
        cancel = q.put("cancel", key="property:1")
        q.get(timeout=0)  # the worker dies
        clock.advance(11.0)
        assert self.claim(q) == []
        assert [d.message.id for d in broker.dead_letters("calendar").list()] == [booking]
        assert broker.dead_letters("calendar").purge() == 1
        assert self.ids(self.claim(q)) == [cancel]

    def test_block_purge_releases_the_key(self, broker: Broker) -> None:
        q = broker.declare_queue("calendar", on_key_failure="block")
        booking = q.put("booking", key="property:1")
        cancel = q.put("cancel", key="property:1")
        q.get(timeout=0).dead_letter("bad")
        assert self.claim(q) == []
        assert broker.dead_letters("calendar").purge([booking]) == 1
        assert self.ids(self.claim(q)) == [cancel]

    # -- Priority --------------------------------------------------------------------
    def test_higher_priority_first(self, broker: Broker) -> None:
        q = broker.declare_queue("email")
        if self.lacks(broker, "priorities", lambda: q.put("x", priority=5)):
            assert self.claim(q) == []
            return
        low = q.put("low", priority=0)
        high = q.put("high", priority=5)
        mid = q.put("mid", priority=1)
        also_high = q.put("high2", priority=5)
        assert self.drain_ids(q) == [high, also_high, mid, low]

    def test_priority_never_overrides_key_order(self, broker: Broker) -> None:
        q = broker.declare_queue("email")
        if self.lacks(broker, "priorities", lambda: q.put("x", priority=5)):
            return
        first = q.put("first", key="guest:7", priority=0)
        second = q.put("urgent", key="guest:7", priority=9)
        [d] = self.claim(q)
        assert d.message.id == first, "a higher priority overtook its key"
        d.ack()
        assert self.drain_ids(q) == [second]

    # -- Delay -------------------------------------------------------------------------
    def test_delay_holds_a_message_back(self, broker: Broker, clock: ManualClock) -> None:
        q = broker.declare_queue("email")
        if self.lacks(broker, "delays", lambda: q.put("x", delay=10.0)):
            assert self.claim(q) == []
            return
        later = q.put("reminder", delay=10.0)
        now = q.put("welcome")
        assert self.ids(self.claim(q)) == [now]
        clock.advance(9.5)
        assert self.claim(q) == []
        clock.advance(0.5)
        assert self.ids(self.claim(q)) == [later]

    def test_not_before_takes_an_aware_datetime_or_epoch_seconds(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        q = broker.declare_queue("email")
        start = clock.time()
        if self.lacks(broker, "delays", lambda: q.put("x", not_before=start + 5)):
            return
        by_epoch = q.put("epoch", not_before=start + 20.0)
        by_datetime = q.put("datetime", not_before=utc_from_epoch(start + 10.0))
        berlin = dt.timezone(dt.timedelta(hours=2))
        by_offset = q.put("offset", not_before=utc_from_epoch(start + 30.0).astimezone(berlin))
        past = q.put("past", not_before=start - 100.0)
        assert self.drain_ids(q) == [past]
        clock.advance(10.0)
        assert self.drain_ids(q) == [by_datetime]
        clock.advance(10.0)
        assert self.drain_ids(q) == [by_epoch]
        clock.advance(10.0)
        assert self.drain_ids(q) == [by_offset]

    def test_not_before_rejects_a_naive_datetime(self, broker: Broker) -> None:
        q = broker.declare_queue("email")
        with pytest.raises(ConfigurationError, match="aware"):
            q.put("x", not_before=dt.datetime(2030, 1, 1, 12, 0))
        assert self.claim(q) == []

    def test_a_delayed_keyed_message_holds_back_later_messages_of_its_key(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        q = broker.declare_queue("calendar")
        if self.lacks(broker, "delays", lambda: q.put("x", key="k", delay=10.0)):
            return
        held = q.put("delayed", key="property:1", delay=10.0)
        behind = q.put("now", key="property:1")
        assert self.claim(q) == [], "a later message overtook a delayed one of its key"
        clock.advance(10.0)
        assert self.drain_ids(q) == [held, behind]

    # -- Fairness across tenants ---------------------------------------------------------
    def test_claims_rotate_over_tenants(self, broker: Broker) -> None:
        self.skip_unless(broker, "tenant_fairness")
        q = broker.declare_queue("imports")
        q.put_many([NewMessage({"n": i}, tenant="big") for i in range(100)])
        q.put_many([NewMessage({"n": i}, tenant="small") for i in range(5)])
        order = []
        for _ in range(2 * 5 + 2):
            d = q.get(timeout=0)
            order.append(d.message.tenant)
            d.ack()
        assert order.count("small") == 5, f"the small tenant waited behind the backlog: {order}"
        assert "small" in order[:2]

    # -- Rate limits -----------------------------------------------------------------------
    @pytest.mark.parametrize("scope", ["queue", "tenant", "key"])
    def test_rate_limit_is_never_exceeded_in_any_window(
        self, broker: Broker, clock: ManualClock, scope: str
    ) -> None:
        rate = RateLimit(3, per=10.0, scope=scope)  # type: ignore[arg-type]
        if self.lacks(broker, "rate_limits", lambda: broker.declare_queue("api", rate_limit=rate)):
            return
        q = broker.declare_queue("api", rate_limit=rate)
        lines = [(t, k) for t in ("acme", "globex") for k in ("property:1", "property:2")]
        for tenant, key in lines:
            q.put_many([NewMessage({"n": i}, tenant=tenant, key=key) for i in range(4)])

        def bucket(tenant: str | None, key: str | None) -> object:
            return {"queue": None, "tenant": tenant, "key": (tenant, key)}[scope]

        claims: list[tuple[float, object]] = []
        for _ in range(40):
            # Claim and ack until the limit (or the keys) stop us, then let time pass.
            while batch := q.get_many(10, timeout=0):
                for d in batch:
                    claims.append((clock.time(), bucket(d.message.tenant, d.message.key)))
                    d.ack()
            clock.advance(2.5)
        assert len(claims) == 16, "the rate limit must delay claims, not lose messages"
        for t, b in claims:
            in_window = [1 for u, c in claims if c == b and t - 10.0 < u <= t]
            assert len(in_window) <= 3, f"{len(in_window)} claims of {b!r} within 10 s"
        start = claims[0][0]
        first_window = Counter(b for t, b in claims if t == start)
        buckets = {bucket(t, k) for t, k in lines}
        full = dict.fromkeys(buckets, 3)
        assert dict(first_window) == full, f"each {scope} gets its full budget at once"
