"""Workers commit the outcomes of handlers that finished together in one call.

Handler threads (tasks) park their outcome; the dispatcher (settle task)
commits everything parked meanwhile with one ``Backend.settle``. The
first commit is held back here until every other handler has parked, so the
second must carry all of them: batching is checked, not hoped for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pmsq
from worker._support import Running, wait_for


def test_handlers_that_finish_together_are_settled_in_one_call(
    live: pmsq.Broker, start: Callable[..., Running]
) -> None:
    n = 8
    together = threading.Barrier(n, timeout=30)

    @live.handler("jobs")
    def handle(message: pmsq.Message) -> None:
        together.wait()  # all n running at once, then all finish

    backend = live.backend
    original = backend.settle
    batches: list[int] = []
    running: list[Running] = []
    started = threading.Event()

    def settle(settlements: Any, *, now: float) -> list[bool]:
        if not batches:
            assert started.wait(30)
            # Hold the first commit until every other finished handler parked.
            rest = n - len(settlements)
            wait_for(
                lambda: running[0].worker._core.parked == rest,
                what="the other handlers to park their outcomes",
            )
        batches.append(len(settlements))
        return original(settlements, now=now)

    backend.settle = settle  # type: ignore[method-assign]
    live.queue("jobs").put_many(list(range(n)))
    running.append(start(live, concurrency=n))
    started.set()

    wait_for(lambda: sum(batches) == n, what="all settlements")
    # The first call took what had parked by then (possibly all); the second, the rest.
    assert len(batches) <= 2, batches
    wait_for(lambda: live.stats("jobs").depth == 0, what="the queue to empty")
    assert live.stats("jobs").processed == n
