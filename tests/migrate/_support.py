"""A source store with one of everything ``pmsq migrate`` must carry, and a snapshot to compare."""

from __future__ import annotations

from typing import Any

import pmsq
from pmsq.backends.base import Backend


def fill_source(broker: pmsq.Broker) -> None:
    """Queues with options, bindings, keys of two tenants, priorities, delays, headers,
    dedup ids, a retried message, dead letters (one blocking its key) and a fallback copy."""
    broker.declare_queue(
        "calendar",
        max_attempts=3,
        lease=10.0,
        backoff=pmsq.Backoff(base=2.0, factor=3.0, cap=60.0, jitter=False),
        dedup_window=None,
    )
    broker.declare_queue("email", max_attempts=1, fallback="sms", on_key_failure="block")
    broker.declare_queue("sms", rate_limit=pmsq.RateLimit(5, per=1.0, scope="tenant"))
    broker.subscribe("booking.*", queue="calendar")
    broker.subscribe("booking.#", queue="email")
    cal = broker.queue("calendar")
    for i in range(30):
        cal.put(
            {"n": i, "text": "héllo"},
            key=f"property:{i % 4}",
            tenant=("acme", "blue", None)[i % 3],
            priority=i % 2,
            dedup_id=f"cal-{i}",
            headers={"trace": str(i)},
        )
    cal.put(b"\x00raw bytes", key="property:9")
    cal.put({"later": True}, key="property:1", tenant="acme", delay=3600)
    # A retried message: attempt 1 spent, waiting for its backoff.
    cal.put({"retried": True}, key="retry-key")
    for d in cal.get_many(50, timeout=1.0):
        if d.message.key == "retry-key":
            d.retry(delay=3600)
        else:
            d.release()  # handed back without spending an attempt
    broker.publish("booking.created", {"booking": 7}, key="property:7", tenant="acme")
    email = broker.queue("email")
    email.put({"mail": 2}, key="property:7", tenant="acme")
    with email.get(timeout=1.0) as d:
        d.dead_letter("mailbox full")  # blocks property:7 of acme; a copy goes to sms


def snapshot(backend: Backend) -> dict[str, Any]:
    """Everything migrate copies, in the order a store would deliver it."""
    messages: dict[str, list[Any]] = {}
    dedup: dict[str, list[Any]] = {}
    for cfg in backend.list_queues():
        rows: list[Any] = []
        cursor: str | None = None
        while True:
            page, cursor = backend.export_messages(cfg.name, after=cursor, limit=7)
            rows.extend(page)
            if cursor is None:
                break
        messages[cfg.name] = rows
        dedup[cfg.name] = backend.export_dedup(cfg.name, now=0.0)
    return {
        "queues": backend.list_queues(),
        "bindings": backend.bindings(),
        "messages": messages,
        "dedup": dedup,
    }
