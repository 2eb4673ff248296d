"""``AsyncWorker`` used natively from async code, on asyncio and trio (anyio's pytest plugin)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import anyio
import pytest

import pmsq

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def until(condition: Callable[[], object], timeout: float = 30.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.005)


async def test_run_until_cancelled(broker: pmsq.Broker) -> None:
    handled: list[int] = []

    @broker.handler("q")
    async def handle(message: pmsq.Message) -> None:
        handled.append(message.payload)

    broker.queue("q").put_many(list(range(20)))
    worker = pmsq.AsyncWorker(broker, concurrency=5)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await until(lambda: broker.stats("q").processed == 20)
        tg.cancel_scope.cancel()  # run() ends with its task group
    assert sorted(handled) == list(range(20))


async def test_cancelling_run_leaves_running_handlers_to_their_lease(broker: pmsq.Broker) -> None:
    started = anyio.Event()
    cancelled: list[str] = []

    @broker.handler("q")
    async def handle(message: pmsq.Message) -> None:
        started.set()
        try:
            await anyio.sleep(60)
        except anyio.get_cancelled_exc_class():
            cancelled.append(message.id)
            raise

    mid = broker.queue("q").put("x")
    worker = pmsq.AsyncWorker(broker)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await started.wait()
        tg.cancel_scope.cancel()
    assert cancelled == [mid]
    # Not settled: still leased, it comes back when the lease runs out (an attempt spent).
    s = broker.stats("q")
    assert (s.in_flight, s.processed, s.retried) == (1, 0, 0)


async def test_stop_from_a_handler_drains_and_returns(broker: pmsq.Broker) -> None:
    handled: list[str] = []
    worker = pmsq.AsyncWorker(broker, concurrency=1)

    @broker.handler("q")
    def handle(message: pmsq.Message) -> None:  # a sync handler, in a worker thread
        handled.append(message.payload)
        if message.payload == "last":
            worker.stop()

    broker.queue("q").put_many(["one", "last", "never"])
    with anyio.fail_after(30):
        await worker.run()  # returns by itself after the stop
    assert handled == ["one", "last"]
    assert broker.stats("q").ready == 1
    assert worker.stopping


async def test_stop_from_another_thread(broker: pmsq.Broker) -> None:
    @broker.handler("q")
    async def handle(message: pmsq.Message) -> None:
        pass

    worker = pmsq.AsyncWorker(broker)
    threading.Timer(0.05, worker.stop).start()
    with anyio.fail_after(30):
        await worker.run()
    with pytest.raises(RuntimeError, match="runs once"):
        await worker.run()


async def test_stop_before_run_makes_run_return(broker: pmsq.Broker) -> None:
    broker.handler("q")(lambda message: None)
    mid = broker.queue("q").put("x")
    worker = pmsq.AsyncWorker(broker)
    worker.stop()
    with anyio.fail_after(30):
        await worker.run()
    [(message, state)] = broker.queue("q").peek()
    assert (message.id, state) == (mid, "ready")
