"""The RabbitMQ objects behind one pmsq queue ``Q`` (prefix ``pmsq``)::

    put (no key) ──────────────► pmsq:Q              quorum, x-delivery-limit, DLX
    put (no key, delay d) ─────► pmsq:Q:delay:5s     quorum, x-message-ttl ──expires──► pmsq:Q
    put (key) ─► pmsq:Q:keys ──► pmsq:Q:s0 .. s{N-1}  quorum shards, same limit and DLX
                 (x-consistent-hash on hash(tenant, key))
    dead letters ─► pmsq:Q:dlx (fanout) ─► pmsq:Q:dead   quorum

Every queue is a quorum queue (durable, replicated, fsynced before the
publisher confirm). Dead-lettering uses ``x-dead-letter-strategy =
at-least-once`` so a message moving from a delay step, or out of a queue
whose delivery limit ran out, cannot be lost on the way. The arguments of a
queue cannot change once it exists, so the delivery limit and the shard
count are fixed when the queue is first declared and recorded in the catalogue.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from pmsq_rabbitmq.link import AMQP_ERRORS, Link
from pmsq_rabbitmq.settings import Names

__all__ = ["declare", "delete", "object_names"]

_QUORUM = {"x-queue-type": "quorum"}


def _dead_lettering(names: Names, queue: str, delivery_limit: int) -> dict[str, Any]:
    return {
        **_QUORUM,
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": names.dlx(queue),
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def declare(
    ch: Any, names: Names, queue: str, *, shards: int, delivery_limit: int, steps: tuple[float, ...]
) -> None:
    """Declare every object of ``queue`` (idempotent with the same arguments)."""
    ch.exchange_declare(names.dlx(queue), "fanout", durable=True)
    ch.queue_declare(names.dead(queue), durable=True, arguments=_QUORUM)
    ch.queue_bind(names.dead(queue), names.dlx(queue))
    args = _dead_lettering(names, queue, delivery_limit)
    ch.queue_declare(names.main(queue), durable=True, arguments=args)
    ch.exchange_declare(names.hash_exchange(queue), "x-consistent-hash", durable=True)
    for i in range(shards):
        ch.queue_declare(names.shard(queue, i), durable=True, arguments=args)
        # Equal weights: each shard takes an equal share of the hash ring.
        ch.queue_bind(names.shard(queue, i), names.hash_exchange(queue), routing_key="1")
    for step in steps:
        ch.queue_declare(
            names.delay(queue, step),
            durable=True,
            arguments={
                **_QUORUM,
                "x-message-ttl": int(step * 1000),
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": names.main(queue),
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
        )


def object_names(
    names: Names, queue: str, shards: int, steps: tuple[float, ...]
) -> Iterator[tuple[str, str]]:
    """``("queue" | "exchange", name)`` of every object of ``queue``."""
    yield "queue", names.main(queue)
    yield "queue", names.dead(queue)
    for i in range(shards):
        yield "queue", names.shard(queue, i)
    for step in steps:
        yield "queue", names.delay(queue, step)
    yield "exchange", names.hash_exchange(queue)
    yield "exchange", names.dlx(queue)


def delete(link: Link, names: Names, queue: str, shards: int, steps: tuple[float, ...]) -> None:
    """Delete every object of ``queue`` and its messages (tests and ``delete_all``)."""
    ch = link.channel()
    for kind, name in object_names(names, queue, shards, steps):
        with contextlib.suppress(*AMQP_ERRORS):
            if kind == "queue":
                ch.queue_delete(name)
            else:
                ch.exchange_delete(name)
