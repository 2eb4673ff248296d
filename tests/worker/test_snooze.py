"""``pmsq.Snooze`` raised in a handler, under every driver and in a child process:
the message comes back after the delay at the same attempt, counted as no failure."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pmsq
from pmsq.clock import ManualClock
from worker import snooze_handlers
from worker._support import Running, wait_for

Start = Callable[..., Running]


def test_a_snoozing_handler_comes_back_later_at_the_same_attempt(
    broker: pmsq.Broker, clock: ManualClock, start: Start
) -> None:
    broker.declare_queue("psp", max_attempts=1)
    calls: list[int] = []

    @broker.handler("psp")
    def handle(message: pmsq.Message) -> None:
        calls.append(message.attempt)
        if len(calls) < 3:
            raise pmsq.Snooze(600.0)  # the webhook has not arrived yet

    q = broker.queue("psp")
    mid = q.put({"payment": 1}, key="booking:1")
    behind = q.put({"payment": 2}, key="booking:1")
    start(broker)
    for n in (1, 2):
        wait_for(lambda n=n: len(calls) == n and broker.stats("psp").in_flight == 0)
        assert broker.stats("psp").delayed == 2, "snoozed, and its key stays blocked"
        clock.advance(600.0)
    wait_for(lambda: broker.stats("psp").depth == 0, what="both handled")
    # max_attempts=1: any counted attempt would have dead-lettered it.
    assert calls == [1, 1, 1, 1]
    assert broker.dead_letters("psp").list() == []
    stats = broker.stats("psp")
    assert (stats.failed, stats.processed) == (0, 2)
    events = [e.event for e in broker.backend.history(message_id=mid)]  # type: ignore[attr-defined]
    assert events.count("snoozed") == 2
    assert behind


def test_a_snooze_in_a_child_process_reaches_the_parent(live: pmsq.Broker, tmp_path: Path) -> None:
    live.declare_queue("psp", max_attempts=1)
    live.handler("psp", isolation="process")(snooze_handlers.snooze_once)
    log = tmp_path / "calls.log"
    payload: dict[str, Any] = {"log": str(log)}
    live.queue("psp").put(payload)
    running = Running("thread", live)
    try:
        wait_for(lambda: live.stats("psp").depth == 0, what="snoozed, then handled")
    finally:
        running.stop()
    assert log.read_text().split() == ["1", "1"]
    assert live.dead_letters("psp").list() == []
