"""What only the thread ``Worker`` has: ``run()`` off the main thread, ``stop()``
from its own handler, the abandon path of ``stop(timeout)``."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import pmsq
from worker._support import wait_for


def test_run_off_the_main_thread_installs_no_signals_and_returns_after_stop(
    broker: pmsq.Broker,
) -> None:
    handled = threading.Event()
    broker.handler("q")(lambda message: handled.set())
    broker.queue("q").put(1)
    worker = pmsq.Worker(broker, concurrency=2)
    runner = threading.Thread(target=worker.run)
    runner.start()
    wait_for(handled.is_set)
    assert worker.stop(5) is True
    runner.join(30)
    assert not runner.is_alive()


def test_stop_called_by_a_handler_only_asks(broker: pmsq.Broker) -> None:
    worker = pmsq.Worker(broker, concurrency=1)
    answers: list[bool] = []

    @broker.handler("q")
    def handle(message: pmsq.Message) -> None:
        answers.append(worker.stop(5))  # must not wait for itself

    broker.queue("q").put_many([1, 2, 3])
    runner = threading.Thread(target=worker.run)
    runner.start()
    runner.join(30)
    assert not runner.is_alive()  # run() noticed the request and drained
    assert answers == [False]
    assert broker.stats("q").ready == 2


def test_stop_timeout_abandons_a_stuck_handler_without_settling(
    broker: pmsq.Broker, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()
    started = threading.Event()

    @broker.handler("q")
    def handle(message: pmsq.Message) -> None:
        started.set()
        release.wait(30)

    broker.queue("q").put("x")
    worker = pmsq.Worker(broker)
    worker.start()
    wait_for(started.is_set)
    assert worker.stop(timeout=0.05) is False
    release.set()
    wait_for(lambda: "ended after the worker stopped" in caplog.text, what="the late finisher")
    # It settled nothing: the message stays leased until its lease runs out.
    s = broker.stats("q")
    assert (s.in_flight, s.processed) == (1, 0)


def test_several_free_slots_are_filled_by_one_batched_claim(broker: pmsq.Broker) -> None:
    gate = threading.Event()
    calls: list[int] = []
    started: list[int] = []

    @broker.handler("q")
    def handle(message: pmsq.Message) -> None:
        started.append(message.payload)
        gate.wait(30)

    broker.queue("q").put_many(list(range(10)))
    real = broker.backend.claim

    def counting(queue: str, n: int, **kw: Any) -> Any:
        got = real(queue, n, **kw)
        if got:
            calls.append(len(got))
        return got

    broker.backend.claim = counting  # type: ignore[method-assign]
    with pmsq.Worker(broker, concurrency=4):
        wait_for(lambda: len(started) == 4)
        assert calls == [4]  # one claim of 4, and nothing more while every slot is busy
        assert broker.stats("q").ready == 6  # the backlog stays in the store
        gate.set()
