"""Fixtures of the dashboard tests: a store with queues, tenants and dead letters."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import pmsq
from pmsq.clock import ManualClock

TOKEN = "admin-token-0123"
ACME_TOKEN = "acme-token-4567"
GLOBEX_TOKEN = "globex-token-89ab"


def kill(broker: pmsq.Broker, queue: str, n: int, *, tenant: str | None, reason: str) -> list[str]:
    """Put ``n`` messages and dead-letter each at once; their ids."""
    q = broker.queue(queue)
    ids = [q.put({"n": i}, tenant=tenant, key=f"property:{i}") for i in range(n)]
    for _ in ids:
        with q.get(timeout=1.0) as d:
            d.dead_letter(reason)
    return ids


@pytest.fixture
def store(tmp_path: Path) -> Iterator[pmsq.Broker]:
    """Two queues; ``email`` has dead letters of tenants acme and globex."""
    clock = ManualClock(1_800_000_000.0)
    with pmsq.connect(str(tmp_path / "pms.db"), clock=clock, durability="memory") as broker:
        broker.declare_queue("email", max_attempts=3)
        broker.declare_queue("calendar")
        kill(broker, "email", 2, tenant="acme", reason="smtp refused")
        kill(broker, "email", 1, tenant="globex", reason="smtp refused")
        broker.queue("calendar").put({"booking": 1}, tenant="acme", key="property:1")
        broker.queue("calendar").put({"booking": 2}, tenant="globex", key="property:2")
        yield broker


def dead_ids(broker: pmsq.Broker, queue: str = "email") -> list[str]:
    return [d.message.id for d in broker.dead_letters(queue).list()]
