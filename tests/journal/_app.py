"""The booking story for the journal tests: one booking and every message it causes."""

from __future__ import annotations

import pmsq

QUEUES = ("calendar", "email", "cleaning", "accounting", "channel", "invoices", "ledger")


def build(broker: pmsq.Broker) -> None:
    """Declare the queues and register handlers that publish further messages.

    calendar → a channel-manager sync (rejected by the channel: dead letter);
    email fails once and then succeeds; accounting publishes an invoice,
    whose handler books a ledger entry.
    """
    fast = pmsq.Backoff(base=0.0, factor=1.0, cap=0.0, jitter=False)
    for name in QUEUES:
        broker.declare_queue(name, max_attempts=3, backoff=fast)
    for name in ("calendar", "email", "cleaning", "accounting"):
        broker.subscribe("booking.*", queue=name)
    broker.subscribe("invoice.*", queue="invoices")

    @broker.handler("calendar")
    def calendar(m: pmsq.Message) -> None:
        broker.queue("channel").put({"sync": m.payload}, key=m.key, tenant=m.tenant)

    @broker.handler("email")
    def email(m: pmsq.Message) -> None:
        if m.attempt == 1:
            raise ConnectionError("SMTP server not answering")

    @broker.handler("cleaning")
    def cleaning(m: pmsq.Message) -> None:
        pass

    @broker.handler("accounting")
    def accounting(m: pmsq.Message) -> None:
        broker.publish("invoice.created", {"booking": m.payload}, key=m.key, tenant=m.tenant)

    @broker.handler("invoices")
    def invoices(m: pmsq.Message) -> None:
        broker.queue("ledger").put({"entry": m.payload}, tenant=m.tenant)

    @broker.handler("ledger")
    def ledger(m: pmsq.Message) -> None:
        pass

    @broker.handler("channel")
    def channel(m: pmsq.Message) -> None:
        raise pmsq.Reject("channel manager refused the dates")


def settled(broker: pmsq.Broker) -> bool:
    """Nothing left waiting or in flight in any queue of the story."""
    stats = broker.stats()
    return all(
        stats.queues[q].ready + stats.queues[q].delayed + stats.queues[q].in_flight == 0
        for q in QUEUES
        if q in stats.queues
    )


def run_story(broker: pmsq.Broker) -> str:
    """Publish one booking, work until everything settled; return the chain's id."""
    from worker._support import wait_for

    build(broker)
    ids = broker.publish("booking.created", {"booking": 4521}, key="property:4521", tenant="acme")
    with pmsq.Worker(broker, concurrency=4):
        wait_for(
            lambda: settled(broker) and len(broker.backend.history(queue="ledger")) >= 3,
            what="the booking's messages to settle",
        )
    root = broker.backend.history(message_id=ids[0])[0].correlation_id
    assert root is not None
    return root
