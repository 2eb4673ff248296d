"""Stats of a fanned-out, multi-tenant flow: per queue, per tenant, and the bindings."""

from __future__ import annotations

import pytest

import pmsq
from pmsq.clock import ManualClock

QUEUES = ("accounting", "calendar", "cleaning", "email")


def test_per_tenant_figures_for_every_queue(broker: pmsq.Broker, clock: ManualClock) -> None:
    for name in QUEUES:
        broker.subscribe("booking.*", queue=name)
    broker.subscribe("booking.cancelled", queue="cleaning")
    broker.subscribe("payment.#", queue="accounting")
    acme, beach = broker.tenant("acme"), broker.tenant("beach")
    acme.publish("booking.created", {"b": 1}, key="property:4521")
    acme.publish("booking.cancelled", {"b": 1}, key="property:4521")  # waits behind its key
    clock.advance(30)
    beach.publish("booking.created", {"b": 2}, key="property:77")
    clock.advance(10)

    held = acme.queue("calendar").get(timeout=0)  # in flight
    dead = beach.queue("email").get(timeout=0)
    dead.dead_letter("provider rejected the address")

    snap = broker.stats()
    assert set(QUEUES) <= set(snap.queues)
    for name in QUEUES:
        qs = snap.queues[name]
        a, b = qs.tenants["acme"], qs.tenants["beach"]
        if name == "calendar":
            assert (a.ready, a.delayed, a.in_flight, a.dead) == (0, 1, 1, 0)
            assert a.oldest_age == pytest.approx(40.0)  # the cancellation, put at t=0
        else:
            assert (a.ready, a.delayed, a.in_flight, a.dead) == (1, 1, 0, 0)
            assert a.oldest_age == pytest.approx(40.0)
        if name == "email":
            assert (b.ready, b.in_flight, b.dead, b.oldest_age) == (0, 0, 1, None)
        else:
            assert (b.ready, b.in_flight, b.dead) == (1, 0, 0)
            assert b.oldest_age == pytest.approx(10.0)
        # The queue's totals are the sum of its tenants.
        assert qs.ready == a.ready + b.ready
        assert qs.in_flight == a.in_flight + b.in_flight
        assert qs.dead == a.dead + b.dead
        assert qs.oldest_age == pytest.approx(40.0)
        assert broker.stats(name) == qs
    assert snap.bindings == tuple(broker.bindings())
    assert ("payment.#", "accounting") in snap.bindings
    assert ("booking.cancelled", "cleaning") in snap.bindings
    # A tenant's own view holds its figures only.
    assert set(beach.stats().queues["email"].tenants) == {"beach"}
    assert beach.stats("email").dead == 1
    assert acme.stats("email").dead == 0
    held.ack()
