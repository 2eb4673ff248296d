"""Coalescing puts: replace the newest undelivered message of a key, keeping its place."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import pmsq
from pmsq.clock import ManualClock

KEYS = ["property:1", "property:2", None]


class CoalesceModel(RuleBasedStateMachine):
    """The store against a model: per-key lines of messages, each waiting, in flight or done.

    A coalescing put replaces the payload of its key's newest message that is
    still in line, provided it was never delivered; otherwise it is a normal put.
    Claims take the oldest head (put order) among keys whose head is waiting.
    """

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp()
        self.clock = ManualClock()
        self.broker = pmsq.connect(
            str(Path(self.tmp) / "pms.db"), clock=self.clock, durability="memory"
        )
        self.q = self.broker.declare_queue("sync", lease=10.0, max_attempts=1000)
        # id -> [seq, key, payload, deliveries, state]
        self.model: dict[str, list[Any]] = {}
        self.held: dict[str, pmsq.Delivery] = {}
        self.seq = 0

    def teardown(self) -> None:
        self.broker.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _line(self, key: str | None) -> list[list[Any]]:
        return sorted(
            (m for m in self.model.values() if m[1] == key and m[4] != "done"), key=lambda m: m[0]
        )

    @rule(key=st.sampled_from(KEYS[:2]), value=st.integers(0, 99), coalesce=st.booleans())
    def put(self, key: str, value: int, coalesce: bool) -> None:
        mid = self.q.put({"v": value}, key=key, coalesce=coalesce)
        line = self._line(key)
        if coalesce and line and line[-1][4] == "waiting" and line[-1][3] == 0:
            newest = line[-1]
            assert self.model[mid] is newest, "must return the replaced message's id"
            newest[2] = value
            return
        assert mid not in self.model
        self.seq += 1
        self.model[mid] = [self.seq, key, value, 0, "waiting"]

    @rule(value=st.integers(0, 99))
    def put_unkeyed(self, value: int) -> None:
        mid = self.q.put({"v": value})
        self.seq += 1
        self.model[mid] = [self.seq, None, value, 0, "waiting"]

    @rule()
    def claim(self) -> None:
        heads = []
        for key in {m[1] for m in self.model.values()}:
            if key is None:
                heads += [m for m in self.model.values() if m[1] is None and m[4] == "waiting"]
            else:
                line = self._line(key)
                if line and line[0][4] == "waiting":
                    heads.append(line[0])
        got = self.q.get_many(1, timeout=0)
        if not heads:
            assert got == []
            return
        expected = min(heads, key=lambda m: m[0])
        (d,) = got
        m = self.model[d.message.id]
        assert m is expected
        assert d.message.payload == {"v": m[2]}
        m[3] += 1
        assert d.message.attempt == m[3]
        m[4] = "flying"
        self.held[d.message.id] = d

    @precondition(lambda self: self.held)
    @rule(data=st.data(), how=st.sampled_from(["ack", "retry", "retry_later"]))
    def settle(self, data: st.DataObject, how: str) -> None:
        # By put order, not by id: ids made in one clock tick sort randomly, and
        # hypothesis needs the same draws to pick the same message when it replays.
        mid = data.draw(st.sampled_from(sorted(self.held, key=lambda i: self.model[i][0])))
        d = self.held.pop(mid)
        if how == "ack":
            d.ack()
            self.model[mid][4] = "done"
        else:
            d.retry(delay=0 if how == "retry" else 5.0)
            self.model[mid][4] = "waiting" if how == "retry" else "scheduled"

    @rule()
    def time_passes(self) -> None:
        # Leases (10 s) run out and retry delays (5 s) are over.
        self.clock.advance(11.0)
        for m in self.model.values():
            if m[4] in ("flying", "scheduled"):
                m[4] = "waiting"
        self.held.clear()

    @invariant()
    def waiting_payloads_match(self) -> None:
        stored = {m.id: (m.payload["v"], state) for m, state in self.q.peek(1000)}
        live = {mid: m for mid, m in self.model.items() if m[4] != "done"}
        assert set(stored) == set(live)
        for mid, m in live.items():
            assert stored[mid][0] == m[2]


CoalesceModel.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
TestCoalesceAgainstModel = CoalesceModel.TestCase


def test_replaces_the_newest_waiting_message_and_keeps_its_place(broker: pmsq.Broker) -> None:
    q = broker.queue("sync")
    first = q.put({"v": 1}, key="property:1")
    other = q.put({"v": 1}, key="property:2")
    assert q.put({"v": 2}, key="property:1", coalesce=True) == first
    assert q.put({"v": 3}, key="property:1", coalesce=True) == first
    got = q.get_many(10, timeout=0)
    assert [(d.message.id, d.message.payload) for d in got] == [
        (first, {"v": 3}),
        (other, {"v": 1}),
    ]


def test_with_nothing_waiting_it_is_a_normal_put(broker: pmsq.Broker) -> None:
    q = broker.queue("sync")
    a = q.put({"v": 1}, key="property:1", coalesce=True)
    with q.get(timeout=0) as d:
        assert d.message.id == a
    b = q.put({"v": 2}, key="property:1", coalesce=True)
    assert b != a
    with q.get(timeout=0) as d:
        assert (d.message.id, d.message.payload) == (b, {"v": 2})


def test_never_replaces_a_message_in_flight(broker: pmsq.Broker) -> None:
    q = broker.queue("sync")
    a = q.put({"v": 1}, key="property:1")
    d = q.get(timeout=0)
    b = q.put({"v": 2}, key="property:1", coalesce=True)
    assert b != a
    assert d.message.payload == {"v": 1}
    # Behind the one in flight, further syncs coalesce into the new waiting message.
    assert q.put({"v": 3}, key="property:1", coalesce=True) == b
    assert q.get_many(1, timeout=0) == []  # the key is busy
    d.ack()
    with q.get(timeout=0) as nxt:
        assert (nxt.message.id, nxt.message.payload) == (b, {"v": 3})


@pytest.mark.parametrize("how", ["retry-later", "retry-now", "lease-expired"])
def test_never_replaces_a_message_waiting_to_be_redelivered(
    broker: pmsq.Broker, clock: ManualClock, how: str
) -> None:
    q = broker.declare_queue("sync", lease=30.0)
    a = q.put({"v": 1}, key="property:1")
    d = q.get(timeout=0)
    if how == "retry-later":
        d.retry(delay=60)
    elif how == "retry-now":
        d.retry(delay=0)
    else:
        clock.advance(31)
    b = q.put({"v": 2}, key="property:1", coalesce=True)
    assert b != a
    clock.advance(61)
    order = []
    while got := q.get_many(1, timeout=0):
        order.append((got[0].message.id, got[0].message.payload, got[0].message.attempt))
        got[0].ack()
    # The redelivery carries what was delivered before, then the new state follows.
    assert order == [(a, {"v": 1}, 2), (b, {"v": 2}, 1)]


def test_a_delayed_message_is_replaced_and_keeps_its_delay(
    broker: pmsq.Broker, clock: ManualClock
) -> None:
    q = broker.queue("sync")
    a = q.put({"v": 1}, key="property:1", delay=60)
    assert q.put({"v": 2}, key="property:1", coalesce=True) == a
    assert q.get_many(1, timeout=0) == []
    clock.advance(60)
    with q.get(timeout=0) as d:
        assert (d.message.id, d.message.payload) == (a, {"v": 2})


def test_only_the_newest_of_several_waiting_is_replaced(broker: pmsq.Broker) -> None:
    q = broker.queue("sync")
    a = q.put({"v": "a"}, key="property:1")
    b = q.put({"v": "b"}, key="property:1")
    assert q.put({"v": "b2"}, key="property:1", coalesce=True) == b
    payloads = [m.payload for m, _ in q.peek()]
    assert payloads == [{"v": "a"}, {"v": "b2"}]
    assert [m.id for m, _ in q.peek()] == [a, b]


def test_coalesce_needs_a_key(broker: pmsq.Broker) -> None:
    with pytest.raises(pmsq.ConfigurationError, match="key"):
        broker.queue("sync").put({"v": 1}, coalesce=True)


def test_coalesce_respects_tenants(broker: pmsq.Broker) -> None:
    q = broker.queue("sync")
    a = q.put({"v": "acme"}, key="property:1", tenant="acme")
    b = q.put({"v": "beach"}, key="property:1", tenant="beach", coalesce=True)
    assert b != a
    assert q.put({"v": "acme2"}, key="property:1", tenant="acme", coalesce=True) == a
    stored = {m.id: m.payload for m, _ in q.peek()}
    assert stored == {a: {"v": "acme2"}, b: {"v": "beach"}}
