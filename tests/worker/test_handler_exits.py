"""However a handler ends, its message is settled by the policy, and the worker lives on.

Run against every driver (``kind``): a handler that raises
``asyncio.CancelledError`` or awaits a cancelled task, or lets a
``BaseException`` (``SystemExit``, ``KeyboardInterrupt``, ``GeneratorExit``)
escape, fails its message (retried by the queue's policy, dead-lettered with
the traceback after ``max_attempts``), never acks it, and never stops the
worker or its event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

import pmsq
from worker._support import Running, wait_for

Start = Callable[..., Running]

# Immediate retries: the tests follow attempts, not backoff.
_NOW = pmsq.Backoff(base=0, jitter=False)


async def _raise_cancelled() -> None:
    raise asyncio.CancelledError()


async def _await_a_cancelled_task() -> None:
    task = asyncio.ensure_future(asyncio.sleep(30))
    await asyncio.sleep(0)
    task.cancel()
    await task


def _exit_with(error: type[BaseException]) -> Callable[[], None]:
    def boom() -> None:
        raise error("from the handler")

    return boom


EXITS: dict[str, Callable[[], Any]] = {
    "SystemExit": _exit_with(SystemExit),
    "KeyboardInterrupt": _exit_with(KeyboardInterrupt),
    "GeneratorExit": _exit_with(GeneratorExit),
    "BaseException": _exit_with(BaseException),
}


def _good_messages_still_flow(broker: pmsq.Broker, queue: str, handled: list[Any]) -> None:
    ids = broker.queue(queue).put_many([{"good": i} for i in range(30)])
    wait_for(
        lambda: sum(1 for p in handled if isinstance(p, dict) and "good" in p) == 30,
        what="good messages after the bad one",
    )
    wait_for(lambda: broker.stats(queue).processed >= len(ids), what="their acks")


@pytest.mark.parametrize("how", ["raises", "awaits"])
def test_an_async_handler_raising_cancelled_error_fails_its_message_and_the_worker_runs_on(
    live: pmsq.Broker, start: Start, kind: str, how: str
) -> None:
    # Defects 1 (thread Worker acked it) and 2 (AsyncWorker on asyncio stopped).
    if kind == "trio" and how == "awaits":
        pytest.skip("awaiting an asyncio task needs asyncio")
    live.declare_queue("cancel", max_attempts=2, backoff=_NOW)
    handled: list[Any] = []
    attempts: list[int] = []

    @live.handler("cancel")
    async def handle(message: pmsq.Message) -> None:
        if message.payload == "bad":
            attempts.append(message.attempt)
            await (_raise_cancelled() if how == "raises" else _await_a_cancelled_task())
        handled.append(message.payload)

    bad = live.queue("cancel").put("bad")
    run = start(live, concurrency=4)
    wait_for(lambda: live.stats("cancel").dead == 1, what="the dead letter")
    assert attempts == [1, 2]  # failed, retried by the policy, failed again
    [dead] = live.dead_letters("cancel").list()
    assert dead.message.id == bad
    assert dead.error_type == "asyncio.exceptions.CancelledError"
    assert dead.traceback is not None
    assert "CancelledError" in dead.traceback
    assert live.stats("cancel").processed == 0  # never acked
    _good_messages_still_flow(live, "cancel", handled)
    run.stop()


@pytest.mark.parametrize("exit_name", sorted(EXITS))
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_base_exception_escaping_a_handler_fails_its_message_and_the_worker_runs_on(
    live: pmsq.Broker, start: Start, exit_name: str, flavour: str
) -> None:
    # Defect 4: the thread Worker's event loop died (a hot loop of claims and
    # hand-backs), a sync one was taken as a lease expiry, AsyncWorker.run crashed.
    live.declare_queue("exits", max_attempts=2, backoff=_NOW)
    boom = EXITS[exit_name]
    handled: list[Any] = []
    attempts: list[int] = []
    threads: set[threading.Thread] = set()

    def body(message: pmsq.Message) -> None:
        threads.add(threading.current_thread())
        if message.payload == "bad":
            attempts.append(message.attempt)
            boom()
        handled.append(message.payload)

    if flavour == "sync":
        live.handler("exits")(body)
    else:

        async def handle(message: pmsq.Message) -> None:
            body(message)

        live.handler("exits")(handle)

    bad = live.queue("exits").put("bad")
    run = start(live, concurrency=4)
    wait_for(lambda: live.stats("exits").dead == 1, what="the dead letter")
    assert attempts == [1, 2]
    [dead] = live.dead_letters("exits").list()
    assert dead.message.id == bad
    assert dead.error_type == exit_name
    assert dead.traceback is not None
    assert "from the handler" in dead.traceback
    assert "failed 2 of 2 attempts" in dead.reason
    stats = live.stats("exits")
    assert (stats.processed, stats.in_flight) == (0, 0)
    _good_messages_still_flow(live, "exits", handled)
    run.stop()
    assert run.drained in (True, None)  # stop() drained: nothing was left running
