"""Topic routing: which queues a topic reaches, and publishing one copy to each.

The bindings are stored, so every process routes the same way; matching is
``pmsq.topics.matches``. ``Broker.publish`` and the tenant handle's
``publish`` both come here.
"""

from __future__ import annotations

from typing import Any

from pmsq.backends.base import Envelope
from pmsq.connections import bindings_through
from pmsq.envelopes import build_envelope
from pmsq.errors import Unroutable
from pmsq.runtime import Runtime
from pmsq.topics import check_topic, matches

__all__ = ["publish", "route"]


def route(runtime: Runtime, topic: str) -> list[str]:
    """Queues that a message published on ``topic`` goes to, sorted.

    Raises:
        ConfigurationError: ``topic`` is not a valid topic.
    """
    check_topic(topic)
    return sorted({q for p, q in runtime.backend.bindings() if matches(p, topic)})


def publish(
    runtime: Runtime,
    topic: str,
    payload: Any,
    *,
    key: str | None = None,
    tenant: str | None = None,
    priority: int = 0,
    delay: float = 0,
    not_before: Any = None,
    dedup_id: str | None = None,
    headers: dict[str, Any] | None = None,
    connection: Any = None,
) -> list[str]:
    """Put one copy of the message into every queue bound to a matching pattern.

    All copies are stored in one transaction; a queue bound by several
    matching patterns gets one copy. Fan-out siblings share one correlation
    id (the first copy's), so a trace finds them together.

    Returns:
        The ids of the copies, in queue-name order.

    Raises:
        Unroutable: no binding matches (nothing is stored).
        The errors of ``Queue.put``.
    """
    check_topic(topic)
    # Read through the app's connection when there is one: the backend's own
    # connection may be waiting for the lock the app's open transaction holds.
    bindings = bindings_through(runtime.backend, connection)
    queues = sorted({q for p, q in bindings if matches(p, topic)})
    if not queues:
        raise Unroutable(
            f"no queue is subscribed to topic {topic!r}; bind one with "
            f"broker.subscribe(pattern, queue=...) (bindings: {bindings or 'none'})"
        )
    envs: list[Envelope] = []
    first_id: str | None = None
    for q in queues:
        env = build_envelope(
            runtime,
            q,
            payload,
            key=key,
            tenant=tenant,
            priority=priority,
            delay=delay,
            not_before=not_before,
            dedup_id=dedup_id,
            headers=headers,
            coalesce=False,
            topic=topic,
            correlation_id=first_id,
        )
        first_id = first_id or env.correlation_id
        envs.append(env)
    if connection is not None:
        runtime.require("transactional_put")
    return runtime.store(envs, connection=connection)
