"""The worker contract, run against every driver: Worker (threads), AsyncWorker on
asyncio, AsyncWorker on trio (the ``kind`` fixture)."""

from __future__ import annotations

import contextvars
import logging
import random
import tempfile
import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import sniffio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pmsq
from pmsq.clock import ManualClock
from pmsq.context import current_message
from pmsq.policy import Ack, DeadLetterOutcome
from worker._support import Running, log_records, wait_for

Start = Callable[..., Running]


# -- throughput and exactly-once -------------------------------------------------------
def test_every_message_is_handled_exactly_once(live: pmsq.Broker, start: Start) -> None:
    seen: list[str] = []
    lock = threading.Lock()

    @live.handler("sync")
    def handle_sync(message: pmsq.Message) -> None:
        with lock:
            seen.append(message.id)

    @live.handler("async")
    async def handle_async(message: pmsq.Message) -> None:
        await anyio.sleep(0)
        with lock:
            seen.append(message.id)

    ids = []
    for b in range(0, 1500, 250):
        ids += live.queue("sync").put_many([{"i": i} for i in range(b, b + 250)])
        ids += live.queue("async").put_many([{"i": i} for i in range(b, b + 250)])
    run = start(live, concurrency=8)
    wait_for(lambda: len(seen) >= len(ids), what="all messages handled")
    run.stop()
    assert sorted(seen) == sorted(ids)  # each id once: none lost, none twice
    for name in ("sync", "async"):
        s = live.stats(name)
        assert (s.ready, s.delayed, s.in_flight, s.dead) == (0, 0, 0, 0)
        assert s.processed == 1500
        assert s.p50_ms is not None  # handler time reached the store's histogram


# -- outcomes ------------------------------------------------------------------------
def test_failures_retry_with_backoff_then_dead_letter_with_traceback(
    broker: pmsq.Broker, clock: ManualClock, start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pmsq.worker")
    broker.declare_queue(
        "flaky", max_attempts=3, backoff=pmsq.Backoff(base=10, factor=2, cap=100, jitter=False)
    )
    attempts: list[int] = []

    @broker.handler("flaky")
    def handle(message: pmsq.Message) -> None:
        attempts.append(message.attempt)
        raise ValueError(f"boom on attempt {message.attempt}")

    mid = broker.queue("flaky").put({"booking": 1}, key="property:1", tenant="acme")
    start(broker)
    wait_for(lambda: broker.stats("flaky").delayed == 1, what="first retry scheduled")
    assert attempts == [1]
    clock.advance(9)  # backoff is 10 s: not due yet
    clock.advance(1)
    wait_for(lambda: attempts == [1, 2], what="second attempt after 10 s")
    wait_for(lambda: broker.stats("flaky").delayed == 1)
    clock.advance(20)  # second retry waits base * factor
    wait_for(lambda: broker.stats("flaky").dead == 1, what="dead letter")
    assert attempts == [1, 2, 3]
    [dead] = broker.dead_letters("flaky").list()
    assert dead.message.id == mid
    assert dead.attempts == 3
    assert "failed 3 of 3" in dead.reason
    assert dead.error_type == "ValueError"
    assert dead.traceback is not None
    assert "boom on attempt 3" in dead.traceback
    failures = log_records(caplog, "failure")
    assert [f["attempt"] for f in failures] == [1, 2]
    assert failures[0]["error"] == "ValueError: boom on attempt 1"
    wait_for(lambda: log_records(caplog, "dead_letter"), what="the log line (after the settle)")
    [line] = log_records(caplog, "dead_letter")
    assert line["message_id"] == mid
    assert line["key"] == "property:1"
    assert line["tenant"] == "acme"
    assert line["correlation_id"] == mid
    stats = broker.stats("flaky")
    assert (stats.failed, stats.retried, stats.dead_lettered) == (3, 2, 1)


def test_reject_and_retry_signals(broker: pmsq.Broker, clock: ManualClock, start: Start) -> None:
    broker.declare_queue("signals", max_attempts=5)
    calls: list[tuple[str, int]] = []

    @broker.handler("signals")
    def handle(message: pmsq.Message) -> None:
        what = message.payload
        calls.append((what, message.attempt))
        if what == "reject":
            raise pmsq.Reject("the booking does not exist")
        if what == "retry-now" and message.attempt == 1:
            raise pmsq.Retry(delay=0)
        if what == "retry-later" and message.attempt == 1:
            raise pmsq.Retry()

    q = broker.queue("signals")
    reject, now, later = q.put("reject"), q.put("retry-now"), q.put("retry-later")
    start(broker)
    wait_for(lambda: ("retry-now", 2) in calls, what="immediate retry")
    wait_for(lambda: broker.stats("signals").dead == 1)
    [dead] = broker.dead_letters("signals").list()
    assert dead.message.id == reject
    assert dead.attempts == 1  # Reject: no further attempts
    assert dead.reason == "the booking does not exist"
    wait_for(lambda: broker.stats("signals").delayed == 1, what="backoff retry scheduled")
    assert ("retry-later", 2) not in calls
    # Attempt 2 of "retry-now" may still be running: jumping past its lease now
    # would make it expire (a third attempt), which is not what this tests.
    wait_for(lambda: broker.stats("signals").in_flight == 0, what="attempt 2 to settle")
    clock.advance(400)  # past the default backoff
    wait_for(lambda: ("retry-later", 2) in calls, what="retry after backoff")
    wait_for(lambda: broker.stats("signals").depth == 0)
    assert sorted(c for c in calls if c[0] != "reject") == [
        ("retry-later", 1),
        ("retry-later", 2),
        ("retry-now", 1),
        ("retry-now", 2),
    ]
    assert {now, later}.isdisjoint(d.message.id for d in broker.dead_letters("signals").list())


# -- ordering -----------------------------------------------------------------------------
@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    keys=st.lists(st.sampled_from(["a", "b", "c", None]), min_size=1, max_size=30),
    seed=st.integers(0, 2**16),
)
def test_key_order_holds_under_concurrency(kind: str, keys: list[str | None], seed: int) -> None:
    rng = random.Random(seed)
    handled: dict[str | None, list[int]] = defaultdict(list)
    lock = threading.Lock()
    with (
        tempfile.TemporaryDirectory() as tmp,
        pmsq.connect(str(Path(tmp) / "k.db"), durability="memory", poll_interval=0.01) as b,
    ):

        @b.handler("ordered")
        def handle(message: pmsq.Message) -> None:
            if rng.random() < 0.5:
                threading.Event().wait(rng.random() / 500)  # vary the interleaving
            with lock:
                handled[message.key].append(message.payload)

        b.queue("ordered").put_many([pmsq.NewMessage(i, key=k) for i, k in enumerate(keys)])
        run = Running(kind, b, concurrency=4)
        try:
            wait_for(lambda: sum(map(len, handled.values())) >= len(keys))
        finally:
            run.stop()
    for key in {k for k in keys if k is not None}:
        expected = [i for i, k in enumerate(keys) if k == key]
        assert handled[key] == expected, f"key {key!r} handled out of put order"


# -- leases --------------------------------------------------------------------------
def test_heartbeat_keeps_a_long_handler_lease(live: pmsq.Broker, start: Start) -> None:
    live.declare_queue("long-sync", lease=0.3)
    live.declare_queue("long-async", lease=0.3)
    calls: list[tuple[str, int]] = []

    @live.handler("long-sync")
    def slow_sync(message: pmsq.Message) -> None:
        calls.append((message.id, message.attempt))
        threading.Event().wait(1.5)  # five leases long

    @live.handler("long-async")
    async def slow_async(message: pmsq.Message) -> None:
        calls.append((message.id, message.attempt))
        await anyio.sleep(1.5)

    ids = {live.queue("long-sync").put("s"), live.queue("long-async").put("a")}
    start(live, concurrency=4)  # free slots: a redelivery would be taken at once
    wait_for(lambda: live.stats().queues["long-sync"].depth == 0, what="sync ack")
    wait_for(lambda: live.stats().queues["long-async"].depth == 0, what="async ack")
    assert sorted(calls) == sorted((i, 1) for i in ids)  # once each, attempt stayed 1
    assert live.stats("long-sync").processed == 1
    assert live.stats("long-sync").failed == 0  # no lease ever expired


# -- shutdown -------------------------------------------------------------------------
def test_graceful_stop_finishes_in_flight_and_leaves_the_rest_unspent(
    live: pmsq.Broker, start: Start
) -> None:
    gate = threading.Event()
    started: list[str] = []
    finished: list[str] = []

    @live.handler("drain")
    def handle(message: pmsq.Message) -> None:
        started.append(message.id)
        gate.wait(20)
        finished.append(message.id)

    ids = live.queue("drain").put_many(list(range(6)))
    run = start(live, concurrency=2)
    wait_for(lambda: len(started) == 2, what="two handlers in flight")
    stopper = threading.Thread(target=run.stop)
    stopper.start()
    wait_for(lambda: run.worker.stopping, what="stop requested")
    gate.set()  # in-flight handlers finish inside the grace period
    stopper.join(30)
    assert not stopper.is_alive()
    assert run.drained in (True, None)
    assert sorted(finished) == sorted(started)
    s = live.stats("drain")
    assert (s.processed, s.ready, s.in_flight) == (2, 4, 0)
    rest = live.queue("drain").get_many(10, timeout=0)
    assert sorted(d.message.id for d in rest) == sorted(set(ids) - set(started))
    assert [d.message.attempt for d in rest] == [1, 1, 1, 1]


class StopOnClaim(pmsq.Middleware):
    """Asks the worker to stop as soon as it claims: the batch is claimed but never started."""

    def __init__(self) -> None:
        self.worker: Any = None
        self.claimed: list[str] = []
        self.released: list[str] = []

    def on_claim(self, message: pmsq.Message) -> None:
        self.claimed.append(message.id)
        self.worker.stop(5)

    def on_release(self, message: pmsq.Message) -> None:
        self.released.append(message.id)


def test_stop_hands_back_claimed_but_unstarted_messages_without_spending_an_attempt(
    live: pmsq.Broker, start: Start
) -> None:
    handled: list[str] = []

    @live.handler("handback")
    def handle(message: pmsq.Message) -> None:
        handled.append(message.id)

    hook = StopOnClaim()
    run = start(live, concurrency=8, middleware=[hook])
    hook.worker = run.worker
    ids = live.queue("handback").put_many(list(range(5)))
    wait_for(lambda: run.worker.stopping, what="stop on claim")
    run.stop()
    assert handled == []
    assert hook.claimed  # it did claim before stopping ...
    assert sorted(hook.released) == sorted(hook.claimed)  # ... and handed all of them back
    assert live.stats("handback").in_flight == 0
    again = live.queue("handback").get_many(10, timeout=0)
    assert sorted(d.message.id for d in again) == sorted(ids)
    assert {d.message.attempt for d in again} == {1}  # the hand-back spent no attempt


# -- sync and async handlers on either driver ---------------------------------------------
def test_sync_and_async_handlers_run_where_they_belong(
    live: pmsq.Broker, start: Start, kind: str
) -> None:
    seen: dict[str, Any] = {}

    @live.handler("sync")
    def handle_sync(message: pmsq.Message) -> None:
        seen["sync_thread"] = threading.current_thread()
        with pytest.raises(sniffio.AsyncLibraryNotFoundError):
            sniffio.current_async_library()  # a plain thread, not an event loop

    @live.handler("async")
    async def handle_async(message: pmsq.Message) -> None:
        await anyio.sleep(0)
        seen["async_library"] = sniffio.current_async_library()
        seen["async_thread"] = threading.current_thread()

    live.queue("sync").put(1)
    live.queue("async").put(2)
    run = start(live)
    wait_for(lambda: len(seen) == 3 and live.stats("async").depth == live.stats("sync").depth == 0)
    run.stop()
    assert seen["sync_thread"] is not seen["async_thread"]
    assert seen["async_library"] == ("asyncio" if kind == "thread" else kind)


# -- middleware and context -------------------------------------------------------------
hook_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("hook_var", default=None)


class Recorder(pmsq.Middleware):
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def on_worker_start(self, worker: Any) -> None:
        self.calls.append(("start", worker))

    def on_worker_stop(self, worker: Any) -> None:
        self.calls.append(("stop", worker))

    def on_claim(self, message: pmsq.Message) -> None:
        self.calls.append(("claim", message.id))

    def before_process(self, message: pmsq.Message) -> None:
        assert current_message.get() == message
        hook_var.set(message.id)
        self.calls.append(("before", message.id))

    def after_process(
        self, message: pmsq.Message, outcome: Any, error: BaseException | None, duration_ms: float
    ) -> None:
        self.calls.append(("after", message.id, outcome, error, duration_ms))

    def on_settle(self, message: pmsq.Message, outcome: Any, error: Any) -> None:
        self.calls.append(("settle", message.id, outcome, error))


class Exploding(pmsq.Middleware):
    def __getattribute__(self, name: str) -> Any:
        if name.startswith(("on_", "before_", "after_")):

            def boom(*args: Any) -> None:
                raise RuntimeError(f"hook {name} is broken")

            return boom
        return super().__getattribute__(name)


def test_middleware_hooks_and_a_broken_hook_never_stops_processing(
    live: pmsq.Broker, start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    seen_var: dict[str, str | None] = {}

    @live.handler("mw-sync")
    def handle_sync(message: pmsq.Message) -> None:
        seen_var[message.id] = hook_var.get()
        if message.payload == "reject":
            raise pmsq.Reject("no")

    @live.handler("mw-async")
    async def handle_async(message: pmsq.Message) -> None:
        seen_var[message.id] = hook_var.get()

    live.middleware.append(Exploding())
    recorder = Recorder()
    ok, bad = live.queue("mw-sync").put("ok"), live.queue("mw-sync").put("reject")
    other = live.queue("mw-async").put("ok")
    run = start(live, middleware=[recorder])
    wait_for(lambda: sum(1 for c in recorder.calls if c[0] == "settle") == 3)
    run.stop()
    assert recorder.calls[0] == ("start", run.worker)
    assert recorder.calls[-1] == ("stop", run.worker)
    for mid in (ok, bad, other):
        kinds = [c[0] for c in recorder.calls if len(c) > 1 and c[1] == mid]
        assert kinds == ["claim", "before", "after", "settle"]
        assert seen_var[mid] == mid  # a context variable set in before_process reaches the handler
    after = {c[1]: c for c in recorder.calls if c[0] == "after"}
    assert after[ok][2] == Ack()
    assert after[ok][3] is None
    assert after[ok][4] >= 0
    assert isinstance(after[bad][2], DeadLetterOutcome)
    assert isinstance(after[bad][3], pmsq.Reject)
    settle = {c[1]: c for c in recorder.calls if c[0] == "settle"}
    assert settle[ok][3] is None
    assert live.stats("mw-sync").processed == 1
    assert live.stats("mw-sync").dead == 1
    assert live.stats("mw-async").processed == 1
    broken = [r for r in caplog.records if "Exploding.before_process failed" in r.getMessage()]
    assert len(broken) == 3  # logged each time, never fatal


def test_messages_put_by_a_handler_carry_correlation_and_causation(
    live: pmsq.Broker, start: Start
) -> None:
    got: dict[str, pmsq.Message] = {}

    @live.handler("booking")
    def on_booking(message: pmsq.Message) -> None:
        live.queue("email").put({"from": message.id})

    @live.handler("email")
    async def on_email(message: pmsq.Message) -> None:
        got["email"] = message
        live.queue("audit").put({"from": message.id})

    @live.handler("audit")
    def on_audit(message: pmsq.Message) -> None:
        got["audit"] = message

    root = live.queue("booking").put({"booking": 7})
    start(live)
    wait_for(lambda: "audit" in got, what="the end of the chain")
    email, audit = got["email"], got["audit"]
    assert (email.correlation_id, email.causation_id) == (root, root)
    assert (audit.correlation_id, audit.causation_id) == (root, email.id)
    assert current_message.get() is None  # nothing leaked into the test's context


# -- limits -----------------------------------------------------------------------------
def test_handler_concurrency_and_tenant_concurrency_limits(live: pmsq.Broker, start: Start) -> None:
    lock = threading.Lock()
    active: dict[str, int] = defaultdict(int)
    peak: dict[str, int] = defaultdict(int)
    done: list[str] = []

    def track(label: str) -> None:
        with lock:
            active[label] += 1
            peak[label] = max(peak[label], active[label])
        threading.Event().wait(0.01)
        with lock:
            active[label] -= 1
            done.append(label)

    @live.handler("limited", concurrency=2)
    def limited(message: pmsq.Message) -> None:
        track("limited")

    @live.handler("tenanted", tenant_concurrency=1)
    def tenanted(message: pmsq.Message) -> None:
        track(f"tenant:{message.tenant}")

    live.queue("limited").put_many(list(range(12)))
    live.queue("tenanted").put_many(
        [pmsq.NewMessage(i, tenant=t) for i in range(8) for t in ("acme", "globex")]
    )
    start(live, concurrency=8)
    wait_for(lambda: len(done) == 28, what="all handled")
    wait_for(lambda: live.stats("tenanted").depth == live.stats("limited").depth == 0)
    assert peak["limited"] <= 2
    assert peak["tenant:acme"] <= 1
    assert peak["tenant:globex"] <= 1
    assert live.stats("tenanted").depth == 0
    assert live.stats("tenanted").processed == 16


# -- waiting ------------------------------------------------------------------------------
def test_idle_worker_claims_nothing_from_an_unchanged_store_and_wakes_on_a_put(
    db_path: Path, start: Start
) -> None:
    with pmsq.connect(str(db_path), durability="normal", poll_interval=0.05) as b:
        handled = threading.Event()
        for name in ("q1", "q2", "q3"):
            b.handler(name)(lambda message: handled.set())
        claims: list[str] = []
        asked: list[object] = []
        real_claim, real_ready = b.backend.claim, b.backend.ready_queues

        def counting_claim(queue: str, n: int, **kw: Any) -> Any:
            claims.append(queue)
            return real_claim(queue, n, **kw)

        def counting_ready(queues: Any, **kw: Any) -> Any:
            asked.append(queues)
            return real_ready(queues, **kw)

        b.backend.claim = counting_claim  # type: ignore[method-assign]
        b.backend.ready_queues = counting_ready  # type: ignore[method-assign]
        start(b)
        wait_for(lambda: len(asked) >= 1, what="the first idle round")
        threading.Event().wait(0.5)  # idle: the store says no queue has work
        # Issue 15: an idle worker probed every queue every poll interval.
        assert claims == []
        b.queue("q2").put("wake up")
        wait_for(handled.is_set, what="the put to be handled")
        assert claims[0] == "q2"  # the woken round claimed only where the put landed


def test_store_errors_while_claiming_are_logged_and_survived(
    live: pmsq.Broker, start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    handled: list[str] = []

    @live.handler("fragile")
    def handle(message: pmsq.Message) -> None:
        handled.append(message.id)

    failures = [2]
    real_claim = live.backend.claim

    def failing_claim(queue: str, n: int, **kw: Any) -> Any:
        if failures[0]:
            failures[0] -= 1
            raise pmsq.StorageError("database is locked (injected)")
        return real_claim(queue, n, **kw)

    live.backend.claim = failing_claim  # type: ignore[method-assign]
    mid = live.queue("fragile").put("x")
    start(live)
    wait_for(lambda: handled == [mid], what="handled after the store recovered")
    assert len(log_records(caplog, "claim_failed")) == 2
