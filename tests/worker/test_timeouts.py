"""Handler timeouts never break per-key order (thread isolation, every driver).

A sync handler in a thread cannot be killed: past its ``timeout`` it is
waited for, its lease kept alive and its key blocked, and when it finally
returns its message is settled as a timeout failure (the attempt counts).
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import anyio
import pytest

import pmsq
from worker._support import Running, log_records, wait_for

Start = Callable[..., Running]


def test_a_sync_handler_past_its_timeout_keeps_its_key_until_its_thread_returns(
    live: pmsq.Broker, start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pmsq.worker")
    live.declare_queue("pdf", lease=0.3, max_attempts=2, backoff=pmsq.Backoff(base=0, jitter=False))
    release = threading.Event()
    lock = threading.Lock()
    running: dict[str | None, int] = defaultdict(int)
    overlaps: list[str] = []
    starts: list[tuple[Any, int]] = []

    @live.handler("pdf", timeout=1.0)
    def render(message: pmsq.Message) -> None:
        with lock:
            starts.append((message.payload, message.attempt))
            running[message.key] += 1
            if running[message.key] > 1:
                overlaps.append(f"{message.payload} attempt {message.attempt}")
        try:
            if message.payload == 1 and message.attempt == 1:
                release.wait(30)  # ignores its timeout, as a hung PDF library would
        finally:
            with lock:
                running[message.key] -= 1

    extends: list[float] = []
    real_extend = live.backend.extend

    def counting_extend(*args: Any, **kw: Any) -> Any:
        extends.append(1)
        return real_extend(*args, **kw)

    live.backend.extend = counting_extend  # type: ignore[method-assign]
    q = live.queue("pdf")
    first = q.put(1, key="property:4521")
    q.put(2, key="property:4521")
    run = start(live, concurrency=4)  # free slots: an overlap would be taken at once
    wait_for(lambda: log_records(caplog, "handler_overdue"), what="the overdue warning")
    seen = len(extends)
    # Five more lease lengths: the lease is kept alive, nothing of the key starts.
    wait_for(lambda: len(extends) >= seen + 5, what="heartbeats past the timeout")
    assert starts == [(1, 1)]
    s = live.stats("pdf")
    assert (s.in_flight, s.ready, s.retried, s.dead) == (1, 0, 0, 0)
    release.set()  # the thread finally returns: a timeout failure, retried by policy
    wait_for(lambda: live.stats("pdf").depth == 0, what="both messages done")
    assert starts == [(1, 1), (1, 2), (2, 1)]
    assert overlaps == []
    [failure] = log_records(caplog, "failure")
    assert failure["message_id"] == first
    assert failure["attempt"] == 1
    assert "TimeoutError" in failure["error"]
    assert "timeout of 1.0s" in failure["error"]
    run.stop()
    s = live.stats("pdf")
    assert (s.processed, s.failed, s.retried) == (2, 1, 1)


def test_a_handler_past_its_timeout_that_still_returns_is_a_failure_not_an_ack(
    live: pmsq.Broker, start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pmsq.worker")
    live.declare_queue("late-sync", max_attempts=1, lease=0.3)
    live.declare_queue("late-async", max_attempts=1)
    release = threading.Event()
    cancelled = threading.Event()

    @live.handler("late-sync", timeout=0.05)
    def late_sync(message: pmsq.Message) -> None:
        release.wait(30)

    @live.handler("late-async", timeout=0.05)
    async def late_async(message: pmsq.Message) -> None:
        try:
            await anyio.sleep(30)
        finally:
            cancelled.set()  # an async handler is cancelled at its timeout

    live.queue("late-sync").put("x")
    live.queue("late-async").put("y")
    start(live)
    wait_for(lambda: live.stats("late-async").dead == 1, what="the async timeout")
    assert cancelled.is_set()
    wait_for(lambda: log_records(caplog, "handler_overdue"), what="the sync handler to overrun")
    assert live.stats("late-sync").in_flight == 1  # still running, still leased
    release.set()  # it returns, successfully but too late
    wait_for(lambda: live.stats("late-sync").dead == 1, what="the sync timeout")
    for name in ("late-sync", "late-async"):
        [dead] = live.dead_letters(name).list()
        assert dead.error_type == "TimeoutError"
        assert "timeout of 0.05s" in dead.reason
        assert live.stats(name).processed == 0
