"""Conformance: what a put stores, and where.

DESIGN.md "Delivery guarantees": Dedup, Coalescing; "Public API": put_many
(one transaction), ``max_depth`` / ``tenant_quota``, topic fan-out;
"Precise meanings": Dedup, Tenant handles, Topics.
"""

from __future__ import annotations

import pytest

from pmsq.broker import Broker
from pmsq.clock import ManualClock
from pmsq.errors import ConfigurationError, QueueFull, SerializationError, Unroutable
from pmsq.message import Message, NewMessage
from pmsq.testing._suite import SuiteBase

__all__ = ["PutTests"]


class PutTests(SuiteBase):
    """Dedup, coalescing, atomic batches, quotas, tenant handles and topics."""

    # -- Dedup ------------------------------------------------------------------------
    def test_dedup_within_the_window_returns_the_first_id_and_stores_nothing(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        q = broker.declare_queue("payments", dedup_window=60.0)
        if self.lacks(broker, "dedup", lambda: q.put("x", dedup_id="pay-1")):
            assert self.claim(q) == []
            return
        first = q.put({"amount": 100}, dedup_id="pay-1")
        clock.advance(30.0)
        assert q.put({"amount": 999}, dedup_id="pay-1") == first
        [d] = self.claim(q)
        assert (d.message.id, d.message.payload, d.message.dedup_id) == (
            first,
            {"amount": 100},
            "pay-1",
        )
        d.ack()
        clock.advance(29.0)  # 59 s after the first put: still in the window, though acked
        assert q.put({"amount": 100}, dedup_id="pay-1") == first
        assert self.claim(q) == [], "a duplicate of an acked message was stored"
        clock.advance(2.0)  # 61 s: the window has passed
        fresh = q.put({"amount": 100}, dedup_id="pay-1")
        assert fresh != first
        assert self.ids(self.claim(q)) == [fresh]

    def test_dedup_window_none_remembers_forever(self, broker: Broker, clock: ManualClock) -> None:
        q = broker.declare_queue("payments", dedup_window=None)
        if self.lacks(broker, "dedup", lambda: q.put("x", dedup_id="pay-1")):
            return
        first = q.put("x", dedup_id="pay-1")
        q.get(timeout=0).ack()
        clock.advance(10 * 365 * 86400.0)
        assert q.put("x", dedup_id="pay-1") == first
        assert self.claim(q) == []

    def test_dedup_is_per_queue_and_per_tenant(self, broker: Broker) -> None:
        a = broker.declare_queue("payments")
        b = broker.declare_queue("refunds")
        if self.lacks(broker, "dedup", lambda: a.put("x", dedup_id="pay-1")):
            return
        ids = {
            a.put("x", dedup_id="pay-1", tenant="acme"),
            a.put("x", dedup_id="pay-1", tenant="globex"),
            b.put("x", dedup_id="pay-1", tenant="acme"),
        }
        assert len(ids) == 3, "one tenant's dedup id must not swallow another's message"

    def test_dedup_applies_within_one_batch(self, broker: Broker) -> None:
        q = broker.declare_queue("payments")
        if self.lacks(broker, "dedup", lambda: q.put("x", dedup_id="pay-1")):
            return
        ids = q.put_many([NewMessage("a", dedup_id="pay-1"), NewMessage("b", dedup_id="pay-1")])
        assert ids[0] == ids[1]
        assert [d.message.payload for d in self.claim(q)] == ["a"]

    # -- Coalescing ---------------------------------------------------------------------
    def test_coalesce_replaces_the_newest_waiting_message_keeping_its_place(
        self, broker: Broker
    ) -> None:
        q = broker.declare_queue("channel-sync")
        if self.lacks(broker, "coalesce", lambda: q.put("x", key="k", coalesce=True)):
            assert self.claim(q) == []
            return
        head = q.put({"rate": 100}, key="property:1")
        newest = q.put({"rate": 110}, key="property:1")
        other = q.put({"rate": 50}, key="property:2")
        assert q.put({"rate": 120}, key="property:1", coalesce=True) == newest
        assert q.put({"rate": 130}, key="property:1", coalesce=True) == newest
        got = []
        while batch := q.get_many(1, timeout=0):
            got.append((batch[0].message.id, batch[0].message.payload))
            batch[0].ack()
        assert sorted(got) == sorted(
            [(head, {"rate": 100}), (newest, {"rate": 130}), (other, {"rate": 50})]
        )
        assert [i for i, _ in got if i != other] == [head, newest], "coalescing moved it"

    def test_coalesce_never_replaces_a_delivered_message(self, broker: Broker) -> None:
        q = broker.declare_queue("channel-sync")
        if self.lacks(broker, "coalesce", lambda: q.put("x", key="k", coalesce=True)):
            return
        first = q.put({"rate": 100}, key="property:1")
        d = q.get(timeout=0)
        second = q.put({"rate": 110}, key="property:1", coalesce=True)
        assert second != first, "an in-flight message was coalesced"
        d.ack()
        d = q.get(timeout=0)
        assert d.message.id == second
        d.retry(delay=0)  # waiting again, but it was delivered: not replaceable
        third = q.put({"rate": 120}, key="property:1", coalesce=True)
        assert third != second, "a delivered (now retried) message was coalesced"
        got = []
        while batch := q.get_many(1, timeout=0):
            m = batch[0].message
            got.append((m.id, m.payload, m.attempt))
            batch[0].ack()
        assert got == [(second, {"rate": 110}, 2), (third, {"rate": 120}, 1)]

    def test_coalesce_with_nothing_waiting_is_a_normal_put(self, broker: Broker) -> None:
        q = broker.declare_queue("channel-sync")
        if self.lacks(broker, "coalesce", lambda: q.put("x", key="k", coalesce=True)):
            return
        mid = q.put({"rate": 1}, key="property:1", coalesce=True)
        assert self.ids(self.claim(q)) == [mid]
        with pytest.raises(ConfigurationError, match="key"):
            q.put({"rate": 1}, coalesce=True)

    # -- put_many ------------------------------------------------------------------------
    def test_put_many_stores_all_in_order(self, broker: Broker) -> None:
        q = broker.declare_queue("imports")
        ids = q.put_many([{"n": 0}, NewMessage({"n": 1}, key="k", tenant="acme"), "plain"])
        assert len(set(ids)) == 3
        got = {d.message.id: d.message for d in self.claim(q)}
        assert [got[i].payload for i in ids] == [{"n": 0}, {"n": 1}, "plain"]
        assert (got[ids[1]].key, got[ids[1]].tenant) == ("k", "acme")

    @pytest.mark.parametrize("bad", ["unencodable", "bad_key", "bad_tenant"])
    def test_put_many_stores_nothing_when_one_item_is_invalid(
        self, broker: Broker, bad: str
    ) -> None:
        q = broker.declare_queue("imports")
        item = {
            "unencodable": NewMessage(object()),
            "bad_key": NewMessage("x", key=""),
            "bad_tenant": NewMessage("x", tenant="no spaces allowed"),
        }[bad]
        error = SerializationError if bad == "unencodable" else ConfigurationError
        with pytest.raises(error):
            q.put_many([{"n": 0}, {"n": 1}, item, {"n": 3}])
        assert self.claim(q) == []

    def test_put_many_stores_nothing_when_the_queue_fills_midway(self, broker: Broker) -> None:
        q = broker.declare_queue("imports", max_depth=3)
        q.put("existing")
        with pytest.raises(QueueFull):
            q.put_many(["a", "b", "c"])
        assert [d.message.payload for d in self.claim(q)] == ["existing"]

    # -- Quotas --------------------------------------------------------------------------
    def test_max_depth_raises_queue_full_until_space_frees(self, broker: Broker) -> None:
        q = broker.declare_queue("imports", max_depth=2)
        q.put("a")
        q.put("b")
        with pytest.raises(QueueFull):
            q.put("c", tenant="acme")
        d = q.get(timeout=0)
        with pytest.raises(QueueFull):
            q.put("c")  # in-flight messages still count
        d.ack()
        q.put("c")
        batch = self.claim(q)
        assert sorted(d.message.payload for d in batch) == ["b", "c"]
        for d in batch:
            d.dead_letter("bad")  # dead letters are not waiting: they free the space too
        q.put_many(["d", "e"])
        assert sorted(d.message.payload for d in self.claim(q)) == ["d", "e"]

    def test_tenant_quota_raises_queue_full_for_that_tenant_only(self, broker: Broker) -> None:
        q = broker.declare_queue("imports", tenant_quota=2)
        q.put_many([NewMessage(i, tenant="acme") for i in range(2)])
        with pytest.raises(QueueFull):
            q.put(2, tenant="acme")
        with pytest.raises(QueueFull):
            broker.tenant("acme").queue("imports").put(2)
        q.put(0, tenant="globex")
        q.put(1, tenant="globex")
        tenants = sorted(d.message.tenant or "" for d in self.claim(q))
        assert tenants == ["acme", "acme", "globex", "globex"]

    # -- Tenant handles --------------------------------------------------------------------
    def test_tenant_handle_sees_and_touches_only_its_tenant(self, broker: Broker) -> None:
        broker.declare_queue("email")
        acme = broker.tenant("acme")
        mine = acme.queue("email").put("for acme")
        theirs = broker.queue("email").put("for globex", tenant="globex")
        broker.queue("email").put("for nobody")
        [d] = self.claim(acme.queue("email"))
        assert (d.message.id, d.message.tenant) == (mine, "acme")
        d.dead_letter("bounced")
        others = {m.message.id: m for m in self.claim(broker.queue("email"))}
        assert theirs in others
        assert mine not in others
        others[theirs].dead_letter("bounced")
        assert [x.message.id for x in acme.dead_letters("email").list()] == [mine]
        assert acme.dead_letters("email").redrive([theirs]) == 0
        assert acme.dead_letters("email").purge([theirs]) == 0
        assert acme.dead_letters("email").purge() == 1
        assert [x.message.id for x in broker.dead_letters("email").list()] == [theirs]
        assert acme.stats("email").dead == 0
        assert broker.stats("email").dead == 1

    def test_tenant_handle_rejects_another_tenant(self, broker: Broker) -> None:
        broker.declare_queue("email")
        broker.subscribe("guest.#", queue="email")
        acme = broker.tenant("acme")
        with pytest.raises(ConfigurationError):
            acme.queue("email").put("x", tenant="globex")
        with pytest.raises(ConfigurationError):
            acme.queue("email").put_many([NewMessage("x", tenant="globex")])
        with pytest.raises(ConfigurationError):
            acme.publish("guest.arrived", "x", tenant="globex")
        assert self.claim(broker.queue("email")) == []
        acme.publish("guest.arrived", "x")
        [d] = self.claim(broker.queue("email"))
        assert d.message.tenant == "acme"

    # -- Topics -------------------------------------------------------------------------
    def test_publish_fans_out_one_copy_per_bound_queue(self, broker: Broker) -> None:
        for q in ("calendar", "email", "accounting"):
            broker.declare_queue(q)
        broker.subscribe("booking.*", queue="calendar")
        broker.subscribe("booking.#", queue="email")
        broker.subscribe("#", queue="email")  # matches too: still one copy
        broker.subscribe("invoice.*", queue="accounting")
        ids = broker.publish("booking.created", {"id": 1}, key="property:4521", tenant="acme")
        assert len(ids) == len(set(ids)) == 2
        got: dict[str, list[Message]] = {}
        for name in ("calendar", "email", "accounting"):
            for d in self.claim(broker.queue(name)):
                got.setdefault(name, []).append(d.message)
        assert sorted(got) == ["calendar", "email"]
        assert all(len(v) == 1 for v in got.values())
        for [m] in got.values():
            assert (m.topic, m.payload, m.key, m.tenant) == (
                "booking.created",
                {"id": 1},
                "property:4521",
                "acme",
            )
        assert {m.id for [m] in got.values()} == set(ids)

    def test_topic_wildcards_match_words(self, broker: Broker) -> None:
        broker.subscribe("booking.*", queue="one-word")
        broker.subscribe("booking.#", queue="any-words")
        broker.publish("booking", "zero")
        broker.publish("booking.created", "one")
        broker.publish("booking.created.late", "two")

        def payloads(name: str) -> list[str]:
            return sorted(d.message.payload for d in self.claim(broker.queue(name)))

        assert payloads("one-word") == ["one"]
        assert payloads("any-words") == ["one", "two", "zero"]

    def test_unroutable_publish_stores_nothing(self, broker: Broker) -> None:
        broker.subscribe("booking.*", queue="calendar")
        with pytest.raises(Unroutable):
            broker.publish("invoice.paid", {"id": 1})
        assert self.claim(broker.queue("calendar")) == []
        assert [q.name for q in broker.queues()] == ["calendar"]
