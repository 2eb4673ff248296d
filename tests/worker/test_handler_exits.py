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
import contextlib
import tempfile
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


# -- the property: however handlers end, outcomes follow the policy and keys never overlap --
BEHAVIOURS = ["ok", "error", "exit", "cancel", "late"]


def _act(behaviour: str) -> None:
    if behaviour == "error":
        raise ValueError("boom")
    if behaviour == "exit":
        raise SystemExit(1)
    if behaviour == "cancel":
        raise asyncio.CancelledError()
    if behaviour == "late":
        threading.Event().wait(0.35)  # past its timeout of 0.25 s, then returns


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    plan=st.lists(
        st.tuples(
            st.sampled_from(["a", "b"]),
            st.sampled_from(BEHAVIOURS),
            st.sampled_from(BEHAVIOURS),
        ),
        min_size=1,
        max_size=8,
    ),
    is_async=st.booleans(),
)
def test_however_handlers_end_outcomes_follow_the_policy_and_keys_never_overlap(
    kind: str, plan: list[tuple[str, str, str]], is_async: bool
) -> None:
    lock = threading.Lock()
    timeline: dict[str, list[tuple[str, int, int]]] = defaultdict(list)

    @contextlib.contextmanager
    def attempt(message: pmsq.Message) -> Iterator[str]:
        """Record the attempt's start and end; yield what it is to do."""
        key, first, second = plan[message.payload]
        with lock:
            timeline[key].append(("start", message.payload, message.attempt))
        try:
            yield first if message.attempt == 1 else second
        finally:
            with lock:
                timeline[key].append(("end", message.payload, message.attempt))

    def handle_sync(message: pmsq.Message) -> None:
        with attempt(message) as behaviour:
            _act(behaviour)

    async def handle_async(message: pmsq.Message) -> None:
        with attempt(message) as behaviour:
            if behaviour == "late":
                await anyio.sleep(0.35)  # cancelled at its timeout of 0.25 s
            _act(behaviour)

    with (
        tempfile.TemporaryDirectory() as tmp,
        pmsq.connect(str(Path(tmp) / "p.db"), durability="memory", poll_interval=0.01) as b,
    ):
        b.declare_queue("p", max_attempts=2, backoff=_NOW)
        b.handler("p", timeout=0.25)(handle_async if is_async else handle_sync)
        b.queue("p").put_many([pmsq.NewMessage(i, key=k) for i, (k, _, _) in enumerate(plan)])
        run = Running(kind, b, concurrency=4)
        try:
            wait_for(lambda: b.stats("p").depth == 0, what="every message settled")
        finally:
            run.stop()
        acked = b.stats("p").processed
        dead = {d.message.payload: d.attempts for d in b.dead_letters("p").list()}
    expected_dead = {i: 2 for i, (_, x, y) in enumerate(plan) if "ok" not in (x, y)}
    assert dead == expected_dead
    assert acked == len(plan) - len(expected_dead)
    for key, events in timeline.items():
        # Strictly one attempt at a time per key, in put order, attempt after attempt.
        starts = [(i, a) for e, i, a in events if e == "start"]
        assert events == [x for s in starts for x in (("start", *s), ("end", *s))], key
        expected = []
        for i, (k, first, _) in enumerate(plan):
            if k == key:
                expected += [(i, 1)] if first == "ok" else [(i, 1), (i, 2)]
        assert starts == expected, key
