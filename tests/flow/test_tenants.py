"""Tenant isolation, adversarially: tenant B's handle tries everything on tenant A's data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import pmsq
from pmsq.clock import ManualClock

from ._support import raw_rows


def _a_state(db: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every stored column of tenant A's messages and dedup records."""
    return (
        raw_rows(db, "SELECT * FROM pmsq_messages WHERE tenant = 'A' ORDER BY seq"),
        raw_rows(db, "SELECT * FROM pmsq_dedup WHERE tenant = 'A' ORDER BY dedup_id"),
    )


@pytest.fixture
def a_world(broker: pmsq.Broker, clock: ManualClock) -> dict[str, Any]:
    """Tenant A with a message in every state: ready, keyed, delayed, in flight, dead."""
    broker.declare_queue("calendar", max_attempts=3)
    broker.declare_queue("email")
    broker.subscribe("booking.*", queue="calendar")
    broker.subscribe("booking.*", queue="email")
    a = broker.tenant("A").queue("calendar")
    ids = {
        "flying": a.put({"a": "flying"}, key="property:4521"),
        "behind": a.put({"a": "behind"}, key="property:4521"),
        "dead": a.put({"a": "dead"}),
        "dedup": a.put({"a": "dedup"}, dedup_id="pay-1"),
        "sync": a.put({"a": "sync"}, key="sync:4521"),
        "later": a.put({"a": "later"}, delay=3600),
    }
    ids["published"] = broker.tenant("A").publish("booking.created", {"a": "pub"})[0]
    held = a.get(timeout=0)
    assert held.message.id == ids["flying"]
    doomed = a.get(timeout=0)
    assert doomed.message.id == ids["dead"]
    doomed.dead_letter("test")
    return {"ids": ids, "held": held}


def test_b_cannot_reach_anything_of_a(
    broker: pmsq.Broker, db_path: Path, a_world: dict[str, Any]
) -> None:
    ids: dict[str, str] = a_world["ids"]
    a_ids = list(ids.values())
    before = _a_state(db_path)
    b = broker.tenant("B")
    bq = b.queue("calendar")

    # get: B never receives A's messages, whatever is ready.
    assert bq.get_many(10, timeout=0) == []
    with pytest.raises(pmsq.Empty):
        bq.get(timeout=0)
    assert bq.peek(100) == []
    assert b.queue("email").get_many(10, timeout=0) == []

    # dead letters: A's ids match nothing; "all" means all of B's (none).
    dl = b.dead_letters("calendar")
    assert dl.list() == []
    assert dl.list(ids=a_ids) == []
    assert dl.redrive(a_ids) == 0
    assert dl.redrive() == 0
    assert dl.purge(a_ids) == 0
    assert dl.purge() == 0
    assert bq.dead_letters().list(ids=[ids["dead"]]) == []

    # stats: no figure of A, not even in totals.
    snap = b.stats()
    for qs in snap.queues.values():
        assert set(qs.tenants) <= {"B"}
        assert (qs.ready, qs.delayed, qs.in_flight, qs.dead, qs.oldest_age) == (0, 0, 0, 0, None)
    assert b.stats("calendar").tenants == {}

    # Acting as A through B's handle is refused.
    with pytest.raises(pmsq.ConfigurationError):
        bq.put({"b": 1}, tenant="A")
    with pytest.raises(pmsq.ConfigurationError):
        bq.put_many([pmsq.NewMessage({"b": 1}, tenant="A")])
    with pytest.raises(pmsq.ConfigurationError):
        b.publish("booking.created", {"b": 1}, tenant="A")

    # Dedup ids are per queue AND tenant: A's dedup_id does not return A's id to B.
    b_dedup = bq.put({"b": "dedup"}, dedup_id="pay-1")
    assert b_dedup not in a_ids
    assert bq.put({"b": "again"}, dedup_id="pay-1") == b_dedup

    # Coalescing touches only B's own key: A's waiting sync message keeps its payload.
    b_sync = bq.put({"b": "sync"}, key="sync:4521", coalesce=True)
    assert b_sync not in a_ids

    # Keys are per tenant: B's property:4521 is not blocked by A's message in flight.
    b_key = bq.put({"b": "key"}, key="property:4521")
    got = bq.get_many(10, timeout=0)
    assert sorted(d.message.id for d in got) == sorted([b_dedup, b_sync, b_key])
    assert {d.message.tenant for d in got} == {"B"}
    for d in got:
        d.dead_letter("B's own")
    assert dl.purge() == 3

    # Nothing of A changed, byte for byte.
    assert _a_state(db_path) == before

    # And A still has all of it.
    a = broker.tenant("A")
    assert [x.message.id for x in a.dead_letters("calendar").list()] == [ids["dead"]]
    assert {m.payload["a"] for m, _ in a.queue("calendar").peek(100)} == {
        "flying",
        "behind",
        "dedup",
        "sync",
        "later",
        "pub",
    }
    assert a.queue("calendar").put({"a": "dup"}, dedup_id="pay-1") == ids["dedup"]
    a_world["held"].ack()


def test_tenant_scoped_stats_are_exact(
    broker: pmsq.Broker, clock: ManualClock, a_world: dict[str, Any]
) -> None:
    clock.advance(10)
    b = broker.tenant("B")
    b.queue("calendar").put({"b": 1})
    a_cal = broker.tenant("A").stats("calendar")
    # ready: dedup, sync, published (behind waits for its key; later is delayed).
    assert (a_cal.ready, a_cal.delayed, a_cal.in_flight, a_cal.dead) == (3, 2, 1, 0 + 1)
    assert a_cal.oldest_age == pytest.approx(10.0)
    b_cal = b.stats("calendar")
    assert (b_cal.ready, b_cal.delayed, b_cal.in_flight, b_cal.dead) == (1, 0, 0, 0)
    assert b_cal.oldest_age == pytest.approx(0.0)
    whole = broker.stats("calendar")
    assert whole.ready == 4
    assert set(whole.tenants) == {"A", "B"}


def test_an_unscoped_queue_put_with_tenant_is_that_tenants(broker: pmsq.Broker) -> None:
    q = broker.queue("calendar")
    mid = q.put({"x": 1}, tenant="A")
    assert broker.tenant("B").queue("calendar").get_many(1, timeout=0) == []
    with broker.tenant("A").queue("calendar").get(timeout=0) as d:
        assert (d.message.id, d.message.tenant) == (mid, "A")


def test_tenant_ids_are_validated(broker: pmsq.Broker) -> None:
    for bad in ("", "a b", "x" * 200, "../etc"):
        with pytest.raises(pmsq.ConfigurationError):
            broker.tenant(bad)
    with pytest.raises(pmsq.ConfigurationError):
        broker.tenant(None)  # type: ignore[arg-type]
