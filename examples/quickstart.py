"""Quick start: a booking event, per-property order, a retry and a dead letter."""

import os
import tempfile

import pmsq

path = os.path.join(tempfile.mkdtemp(), "pms.db")
with pmsq.connect(f"sqlite:///{path}") as broker:
    calendar = broker.declare_queue("calendar", max_attempts=2, backoff=pmsq.Backoff(base=0))
    calendar.put({"booking": 1, "event": "created"}, key="property:4521", tenant="acme")
    calendar.put({"booking": 1, "event": "cancelled"}, key="property:4521", tenant="acme")

    with calendar.get(timeout=1) as delivery:  # the booking comes first...
        print("handled", delivery.message.payload, "attempt", delivery.message.attempt)
    for _ in range(2):  # ...then the cancellation, which fails twice and is dead-lettered
        try:
            with calendar.get(timeout=1) as delivery:
                raise RuntimeError("calendar API down")
        except RuntimeError:
            print("failed", delivery.message.payload, "attempt", delivery.message.attempt)
    for dead in broker.dead_letters("calendar").list():
        print("dead letter:", dead.message.payload, "-", dead.reason)
