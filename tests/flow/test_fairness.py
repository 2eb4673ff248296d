"""Fairness across tenants (rotation among equal priorities) and per-tenant quotas."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pmsq
from pmsq.clock import ManualClock


@settings(max_examples=30, deadline=None)
@given(
    backlog=st.integers(1, 300),
    small=st.integers(1, 8),
    others=st.lists(st.integers(1, 40), max_size=3),
    untenanted=st.integers(0, 20),
    hot_keys=st.sampled_from([None, 1, 3]),
    batch=st.integers(1, 4),
)
def test_a_small_tenant_waits_about_one_message_per_active_tenant(
    backlog: int,
    small: int,
    others: list[int],
    untenanted: int,
    hot_keys: int | None,
    batch: int,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        with pmsq.connect(
            str(Path(tmp) / "pms.db"), clock=ManualClock(), durability="memory"
        ) as broker:
            q = broker.queue("imports")
            # The big tenant's burst is put first; the small tenant arrives behind all of it.
            q.put_many(
                pmsq.NewMessage(
                    {"i": i}, tenant="big", key=None if hot_keys is None else f"k{i % hot_keys}"
                )
                for i in range(backlog)
            )
            for t, n in enumerate(others):
                q.put_many(pmsq.NewMessage({"i": i}, tenant=f"other{t}") for i in range(n))
            q.put_many({"i": i} for i in range(untenanted))  # no tenant: rotates like one
            small_ids = set(
                q.put_many(pmsq.NewMessage({"i": i}, tenant="small") for i in range(small))
            )
            active = 2 + len(others) + (1 if untenanted else 0)
            claimed = 0
            waiting = set(small_ids)
            while waiting:
                got = q.get_many(batch, timeout=0)
                assert got, "the small tenant's messages must stay claimable"
                for d in got:
                    claimed += 1
                    waiting.discard(d.message.id)
                    d.ack()
            # Each claim round gives every tenant with ready work one message.
            assert claimed <= small * active + batch - 1


def test_priority_comes_first_then_rotation(broker: pmsq.Broker) -> None:
    q = broker.queue("imports")
    q.put_many(pmsq.NewMessage({"i": i}, tenant="big", priority=1) for i in range(5))
    q.put_many(pmsq.NewMessage({"i": i}, tenant="small") for i in range(2))
    q.put_many(pmsq.NewMessage({"i": i}, tenant="urgent", priority=2) for i in range(1))
    order = []
    while batch := q.get_many(1, timeout=0):
        order.append((batch[0].message.tenant, batch[0].message.priority))
        batch[0].ack()
    # Higher priority is never overridden by rotation; rotation only breaks ties.
    assert order == [("urgent", 2)] + [("big", 1)] * 5 + [("small", 0)] * 2


def test_rotation_alternates_between_tenants_of_equal_priority(broker: pmsq.Broker) -> None:
    q = broker.queue("imports")
    q.put_many(pmsq.NewMessage({"i": i}, tenant="acme") for i in range(4))
    q.put_many(pmsq.NewMessage({"i": i}, tenant="beach") for i in range(4))
    q.put_many(pmsq.NewMessage({"i": i}, tenant="coast") for i in range(2))
    seen = [d.message.tenant for d in q.get_many(10, timeout=0)]
    assert seen[:6] == ["acme", "beach", "coast"] * 2
    assert seen[6:] == ["acme", "beach"] * 2


def test_rotation_is_shared_by_processes_through_the_store(
    broker: pmsq.Broker, db_path: Path, clock: ManualClock
) -> None:
    q = broker.queue("imports")
    q.put_many(pmsq.NewMessage({"i": i}, tenant="acme") for i in range(3))
    q.put_many(pmsq.NewMessage({"i": i}, tenant="beach") for i in range(3))
    with pmsq.connect(str(db_path), clock=clock, durability="normal") as other:
        oq = other.queue("imports")
        seen = []
        for source in (q, oq, q, oq, q, oq):
            (d,) = source.get_many(1, timeout=0)
            seen.append(d.message.tenant)
    assert seen == ["acme", "beach"] * 3


def test_tenant_quota_limits_only_that_tenant(broker: pmsq.Broker) -> None:
    q = broker.declare_queue("imports", tenant_quota=3)
    acme = [q.put({"i": i}, tenant="acme") for i in range(3)]
    with pytest.raises(pmsq.QueueFull, match="acme"):
        q.put({"i": 3}, tenant="acme")
    # Others still put; messages without a tenant are not under a tenant quota.
    for i in range(3):
        q.put({"i": i}, tenant="beach")
    for i in range(5):
        q.put({"i": i})
    # A batch that would cross the quota stores nothing.
    with pytest.raises(pmsq.QueueFull):
        q.put_many([pmsq.NewMessage({"i": 9}, tenant="coast") for _ in range(4)])
    assert broker.stats("imports").tenants.get("coast") is None
    # In-flight messages count; an ack makes room.
    d = broker.tenant("acme").queue("imports").get(timeout=0)
    with pytest.raises(pmsq.QueueFull):
        q.put({"i": 4}, tenant="acme")
    d.ack()
    assert q.put({"i": 4}, tenant="acme") not in acme
    with pytest.raises(pmsq.QueueFull):
        broker.tenant("acme").queue("imports").put({"i": 5})


def test_quota_admits_dedup_hits_and_coalescing_puts(broker: pmsq.Broker) -> None:
    q = broker.declare_queue("sync", tenant_quota=2)
    first = q.put({"v": 1}, tenant="acme", key="property:4521", dedup_id="s-1")
    q.put({"v": 1}, tenant="acme", key="property:9")
    assert q.put({"v": 2}, tenant="acme", dedup_id="s-1") == first
    assert q.put({"v": 3}, tenant="acme", key="property:4521", coalesce=True) == first
    with pytest.raises(pmsq.QueueFull):
        q.put({"v": 4}, tenant="acme", key="property:77", coalesce=True)  # nothing to replace
    with broker.tenant("acme").queue("sync").get(timeout=0) as d:
        assert d.message.payload == {"v": 3}
