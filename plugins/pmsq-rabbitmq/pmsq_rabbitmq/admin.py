"""Operator calls: dead letters (list, redrive, purge), queue counts, checks.

Dead letters live in the quorum queue ``PREFIX:Q:dead``. AMQP cannot read a
queue without taking its messages, so listing **drains** it: every dead
letter is taken with ``basic_get``, the wanted ones are read (redrive
republishes them, purge acks them) and the rest are ``nack``-ed back in
their order. The cost grows with the number of dead letters (one round trip
each, all held in memory), and while a listing runs, other processes see
fewer dead letters. Keep dead-letter queues short: redrive or purge them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import attrs

from pmsq.backends.base import StoredDeadLetter
from pmsq_rabbitmq import wire
from pmsq_rabbitmq.link import Link, Publish
from pmsq_rabbitmq.routing import QueueInfo, route
from pmsq_rabbitmq.settings import Names

__all__ = ["count", "dead_letters", "purge", "redrive"]


def _drain(link: Link, names: Names, queue: str) -> list[tuple[int, wire.Incoming]]:
    ch = link.channel()
    out: list[tuple[int, wire.Incoming]] = []
    while True:
        method, props, body = ch.basic_get(names.dead(queue), auto_ack=False)
        if method is None:
            return out
        out.append((method.delivery_tag, wire.decode(queue, props, body)))


def _wanted(
    rows: list[tuple[int, wire.Incoming]], ids: Sequence[str] | None, tenant: str | None
) -> list[tuple[int, wire.Incoming]]:
    wanted = None if ids is None else set(ids)
    return [
        (tag, inc)
        for tag, inc in rows
        if (wanted is None or inc.envelope.id in wanted)
        and (tenant is None or inc.envelope.tenant == tenant)
    ]


#: How long a drained dead-letter queue may take to count its requeued letters again.
_REQUEUE_VISIBLE = 5.0


def _finish(link: Link, name: str, rows: list[tuple[int, wire.Incoming]], take: set[int]) -> None:
    """Ack the taken dead letters and put every other one back, in order."""
    ch = link.channel()
    for tag, _ in rows:
        if tag in take:
            ch.basic_ack(tag)
    if len(take) < len(rows):
        ch.basic_nack(rows[-1][0], multiple=True, requeue=True)
    link.sync()
    # A quorum queue applies the requeue through its log: a passive declare
    # right after can still count 0, and stats() would say the dead letters
    # are gone. Return once the queue counts what was put back (bounded).
    kept = len(rows) - len(take)
    deadline = time.monotonic() + _REQUEUE_VISIBLE
    while kept and count(link, name) < kept and time.monotonic() < deadline:
        time.sleep(0.005)


def dead_letters(
    link: Link,
    names: Names,
    queue: str,
    info: QueueInfo,
    *,
    tenant: str | None,
    ids: Sequence[str] | None,
    limit: int | None,
) -> list[StoredDeadLetter]:
    """Dead letters of ``queue``, oldest first (drains and restores the dead queue)."""
    rows = _drain(link, names, queue)
    _finish(link, names.dead(queue), rows, set())
    found = [
        wire.stored_dead_letter(inc, delivery_limit=info.delivery_limit)
        for _, inc in _wanted(rows, ids, tenant)
    ]
    found.sort(key=lambda d: d.dead_at)  # stable: ties keep the dead queue's order
    return found if limit is None else found[:limit]


def redrive(
    link: Link,
    names: Names,
    queue: str,
    info: QueueInfo,
    ids: Sequence[str] | None,
    *,
    now: float,
    tenant: str | None,
) -> int:
    """Put dead letters back into ``queue`` at attempt 1 (same ids); how many moved."""
    rows = _drain(link, names, queue)
    chosen = _wanted(rows, ids, tenant)
    copies: list[Publish] = []
    for _, inc in chosen:
        env = attrs.evolve(inc.envelope, available_at=now)
        exchange, key = route(names, env, info, now)
        copies.append((exchange, key, wire.properties(env, spent=0), env.data))
    try:
        link.publish(copies)
    except BaseException:
        _finish(link, names.dead(queue), rows, set())
        raise
    _finish(link, names.dead(queue), rows, {tag for tag, _ in chosen})
    return len(chosen)


def purge(
    link: Link, names: Names, queue: str, ids: Sequence[str] | None, *, tenant: str | None
) -> int:
    """Delete dead letters; how many."""
    rows = _drain(link, names, queue)
    chosen = _wanted(rows, ids, tenant)
    _finish(link, names.dead(queue), rows, {tag for tag, _ in chosen})
    return len(chosen)


def count(link: Link, name: str) -> int:
    """Ready messages in queue ``name`` (0 if it does not exist)."""
    ok: Any = link.try_spare("queue_declare", name, passive=True)
    return 0 if ok is None else int(ok.method.message_count)


def consumers(link: Link, name: str) -> int:
    """AMQP consumers of queue ``name`` (0 if it does not exist)."""
    ok: Any = link.try_spare("queue_declare", name, passive=True)
    return 0 if ok is None else int(ok.method.consumer_count)
