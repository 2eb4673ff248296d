"""The shared core without any driver: the lifecycle generators driven by hand,
the heartbeat schedule, invocations, the log lines, and the broker's wait."""

from __future__ import annotations

import logging
import threading
import warnings
from typing import Any

import pytest

import pmsq
from pmsq.context import current_message
from pmsq.handlers import HandlerSpec
from pmsq.policy import Ack, DeadLetterOutcome, RetryAt
from pmsq.worker.effects import PARKED, Sleep, Start, Wait
from pmsq.worker.heartbeat import Heartbeats, beat_interval
from pmsq.worker.invoke import Invocation
from pmsq.worker.lifecycle import Call, Effect, Invoke, Job, Lifecycle, Settle, drive
from pmsq.worker.logs import OutcomeLog
from pmsq.worker.loops import dispatch, heartbeat
from pmsq.worker.middleware import Hooks
from pmsq.worker.options import select_handlers


def _perform(effect: Effect) -> Any:
    """The smallest driver: store calls inline, sync handlers inline."""
    if isinstance(effect, Call):
        return effect.fn()
    if isinstance(effect, Settle):
        return effect.run()
    assert isinstance(effect, Invoke)
    effect.invocation.run_sync()
    return None


def _core(broker: pmsq.Broker, concurrency: int = 4) -> tuple[Lifecycle, list[int]]:
    kicks: list[int] = []
    core = Lifecycle(
        broker,
        select_handlers(broker, None),
        concurrency,
        Hooks([]),
        kick=lambda: kicks.append(1),
    )
    return core, kicks


# -- Lifecycle ----------------------------------------------------------------------------
def test_claims_only_free_slots_and_settles_through_the_policy(broker: pmsq.Broker) -> None:
    handled: list[int] = []

    @broker.handler("q")
    def handle(message: pmsq.Message) -> None:
        handled.append(message.payload)
        if message.payload == 1:
            raise ValueError("nope")

    broker.queue("q").put_many([0, 1, 2, 3, 4, 5])
    core, kicks = _core(broker, concurrency=4)
    jobs: list[Job] = drive(core.claim_round(), _perform)
    assert len(jobs) == 4  # bounded prefetch: never more than the free slots
    assert core.free_slots() == 0
    assert broker.stats("q").ready == 2
    assert drive(core.claim_round(), _perform) == []  # full: nothing claimed
    for job in jobs:
        drive(core.process(job), _perform)
    assert handled == [0, 1, 2, 3]
    assert kicks  # the first freed slot of a full worker wakes the dispatcher
    assert core.idle()
    s = broker.stats("q")
    assert (s.processed, s.retried, s.ready, s.delayed) == (3, 1, 2, 1)


def test_the_slot_frees_when_the_handler_ends_and_the_drain_waits_for_the_settlement(
    broker: pmsq.Broker,
) -> None:
    @broker.handler("q")
    def handle(message: pmsq.Message) -> None:
        pass

    q = broker.queue("q")
    q.put_many(["a", "b"])
    core, _ = _core(broker, concurrency=1)
    [job] = drive(core.claim_round(), _perform)
    gen = core.process(job)
    effect = gen.send(None)
    assert isinstance(effect, Invoke)
    _perform(effect)
    effect = gen.send(None)
    # The handler ran; its ack is about to commit. Its slot is free for the
    # next claim, but the message still counts as held: a stop waits for it.
    assert isinstance(effect, Settle)
    assert core.free_slots() == 1
    assert not core.idle()
    core.request_stop(timeout=60)
    assert not core.drained_or_late()
    # The message is still leased in the store until the ack commits.
    assert broker.stats("q").in_flight == 1
    with pytest.raises(StopIteration):
        gen.send(_perform(effect))
    assert core.idle()
    assert core.drained_or_late()
    assert broker.stats("q").processed == 1


def test_tenant_over_its_limit_is_handed_back_and_its_queue_rests(broker: pmsq.Broker) -> None:
    @broker.handler("t", tenant_concurrency=1)
    def handle(message: pmsq.Message) -> None:
        pass

    q = broker.queue("t")
    q.put_many([pmsq.NewMessage("a1", tenant="acme"), pmsq.NewMessage("a2", tenant="acme")])
    core, _ = _core(broker)
    [first] = drive(core.claim_round(), _perform)
    assert first.delivery.message.payload == "a1"
    # a2 was claimed and handed back: waiting again, attempt not spent.
    [(waiting, state)] = [p for p in q.peek() if p[0].payload == "a2"]
    assert (state, waiting.attempt) == ("ready", 0)
    # Claiming again would only hand a2 back again: the queue rests ...
    assert drive(core.claim_round(), _perform) == []
    assert core.wait_args()[1] <= broker.poll_interval
    # ... until acme's running message finishes.
    drive(core.process(first), _perform)
    [second] = drive(core.claim_round(), _perform)
    assert second.delivery.message.payload == "a2"
    assert second.delivery.message.attempt == 1


def test_a_stopping_lifecycle_releases_instead_of_starting(broker: pmsq.Broker) -> None:
    handled: list[str] = []

    @broker.handler("s")
    def handle(message: pmsq.Message) -> None:
        handled.append(message.id)

    mid = broker.queue("s").put("x")
    core, _ = _core(broker)
    [job] = drive(core.claim_round(), _perform)
    core.request_stop(5)
    assert core.free_slots() == 0
    drive(core.process(job), _perform)
    assert handled == []
    assert job.delivery.settled == "released"
    [(message, state)] = broker.queue("s").peek()
    assert (message.id, message.attempt, state) == (mid, 0, "ready")
    assert core.drained_or_late()


def test_drive_throws_store_errors_into_the_generator() -> None:
    def gen() -> Any:
        try:
            yield Call(lambda: 1 / 0)
        except ZeroDivisionError:
            got = yield Call(lambda: "recovered")
            return got
        return "not reached"

    assert drive(gen(), _perform) == "recovered"


def test_wait_args_back_off_after_claim_errors(broker: pmsq.Broker) -> None:
    broker.handler("e")(lambda message: None)
    core, _ = _core(broker)

    def broken(queue: str, n: int, **kw: Any) -> Any:
        raise pmsq.StorageError("disk I/O error (injected)")

    broker.backend.claim = broken  # type: ignore[method-assign]
    broker.queue("e").put(1)  # work to claim: idle rounds claim only where there is some
    assert drive(core.claim_round(), _perform) == []
    first = core.wait_args()
    drive(core.claim_round(), _perform)
    second = core.wait_args()
    assert first[0] == second[0] == ()  # not woken by puts: the store is the problem
    assert second[1] > first[1] > broker.poll_interval


# -- heartbeats ------------------------------------------------------------------------------
def test_heartbeat_schedule() -> None:
    earlier: list[int] = []
    hb: Heartbeats[str] = Heartbeats(on_earlier=lambda: earlier.append(1))
    assert hb.next_at() is None
    hb.add("a", 10.0, now=0.0)
    hb.add("b", 1.0, now=0.0)
    hb.add("c", 5.0, now=0.0)
    assert len(earlier) == 2  # "c" is not due before "b": no need to wake the sleeper
    assert hb.next_at() == 1.0
    assert hb.due(0.5) == []
    assert hb.due(1.0) == ["b"]
    assert hb.next_at() == 2.0  # rescheduled one interval later
    hb.remove("b")
    assert sorted(hb.due(100.0)) == ["a", "c"]
    assert beat_interval(30.0) == 10.0
    assert beat_interval(0.0) > 0


# -- invocations -----------------------------------------------------------------------------
def _spec(fn: Any, timeout: float | None = None) -> HandlerSpec:
    return HandlerSpec(queue="q", fn=fn, timeout=timeout)


def test_invocation_sets_the_current_message_only_inside() -> None:
    message = pmsq.Message(id="m1", queue="q", payload=None)
    seen: list[Any] = []
    inv = Invocation(
        _spec(lambda m: seen.append(current_message.get())),
        message,
        gate=lambda: True,
        before=lambda m: None,
    )
    inv.run_sync()
    assert seen == [message]
    assert current_message.get() is None
    assert inv.started
    assert inv.error is None


def test_invocation_refused_by_the_gate_or_abandoned_before_start_never_runs() -> None:
    calls: list[int] = []
    message = pmsq.Message(id="m1", queue="q", payload=None)
    refused = Invocation(_spec(lambda m: calls.append(1)), message, lambda: False, lambda m: None)
    refused.run_sync()
    abandoned = Invocation(_spec(lambda m: calls.append(2)), message, lambda: True, lambda m: None)
    abandoned.abandon(TimeoutError())
    abandoned.run_sync()
    assert calls == []
    assert not refused.started
    assert not abandoned.started


def test_a_late_result_after_abandon_is_dropped() -> None:
    release = threading.Event()
    message = pmsq.Message(id="m1", queue="q", payload=None)
    inv = Invocation(
        _spec(lambda m: release.wait(10), timeout=0.1), message, lambda: True, lambda m: None
    )
    t = threading.Thread(target=inv.run_sync)
    t.start()
    while not inv.started:
        threading.Event().wait(0.001)
    inv.abandon(inv.timeout_error)
    release.set()
    t.join(10)
    assert isinstance(inv.error, TimeoutError)  # not overwritten by the late success


def test_a_sync_handler_returning_a_coroutine_is_an_error_without_warnings() -> None:
    async def coro(m: pmsq.Message) -> None:
        pass

    message = pmsq.Message(id="m1", queue="q", payload=None)
    inv = Invocation(_spec(lambda m: coro(m)), message, lambda: True, lambda m: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inv.run_sync()
    assert isinstance(inv.error, TypeError)
    assert "async def" in str(inv.error)


# -- log lines -------------------------------------------------------------------------------
def test_outcome_log_lines_carry_the_message_fields(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pmsq.worker")
    clock = pmsq.ManualClock(1000.0)
    log = OutcomeLog(clock)
    m = pmsq.Message(
        id="m1", queue="q", payload=None, key="k", tenant="t", attempt=2, correlation_id="c1"
    )
    log.on_settle(m, Ack(), None)
    assert caplog.records == []  # successes are silent
    log.on_settle(
        m, RetryAt(at=1005.0, error_type="KeyError", error="Traceback\nKeyError: 'x'"), None
    )
    log.on_settle(m, DeadLetterOutcome(reason="rejected", error_type="pmsq.Reject"), None)
    log.on_settle(m, Ack(), pmsq.LeaseLost("gone"))
    text = [r.getMessage() for r in caplog.records]
    assert text[0].startswith("handler failed, will retry in 5.0s queue=q id=m1 key=k tenant=t")
    assert "attempt=2 correlation=c1 error=KeyError: 'x'" in text[0]
    assert text[1].startswith("dead-lettered (rejected)")
    assert [r.pmsq["event"] for r in caplog.records] == ["failure", "dead_letter", "lease_lost"]  # type: ignore[attr-defined]
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.ERROR, logging.WARNING]


# -- options ---------------------------------------------------------------------------------
def test_worker_options_are_checked(broker: pmsq.Broker) -> None:
    with pytest.raises(pmsq.ConfigurationError, match="no handlers"):
        pmsq.Worker(broker).start()
    broker.handler("known")(lambda m: None)
    with pytest.raises(pmsq.ConfigurationError, match="no handler for queue"):
        pmsq.Worker(broker, queues=["unknown"]).start()
    with pytest.raises(pmsq.ConfigurationError, match="list of names"):
        pmsq.Worker(broker, queues="known")
    with pytest.raises(pmsq.ConfigurationError, match="concurrency"):
        pmsq.AsyncWorker(broker, concurrency=0)
    with pytest.raises(pmsq.ConfigurationError, match="Middleware"):
        pmsq.Worker(broker, middleware=[object()])
    w = pmsq.Worker(broker)
    with w:
        pass
    with pytest.raises(RuntimeError, match="runs once"):
        w.start()
    assert w.stop() is True  # idempotent


# -- the broker's wait (broker.runtime.wakeups: changes / wait_any / kick, for the workers) ----
def test_one_wait_covers_several_queues_and_wakes_on_a_local_put(broker: pmsq.Broker) -> None:
    since = broker.runtime.wakeups.changes(["a", "b"])
    woke = threading.Event()

    def waiter() -> None:
        broker.runtime.wakeups.wait_any(["a", "b"], since, 30.0)  # capped at poll_interval ...
        woke.set()

    # ... so loop until the put lands, which must end the wait for queue "b".
    t = threading.Thread(target=waiter)
    t.start()
    broker.queue("b").put(1)
    t.join(30)
    assert woke.is_set()
    assert broker.runtime.wakeups.changes(["a", "b"]) != since


def test_wait_any_without_queues_waits_for_its_wake_condition(broker: pmsq.Broker) -> None:
    flag = threading.Event()
    done = threading.Event()

    def waiter() -> None:
        broker.runtime.wakeups.wait_any((), 0, 60.0, flag.is_set)  # no queues: no poll cap
        done.set()

    t = threading.Thread(target=waiter)
    t.start()
    assert not done.wait(3 * broker.poll_interval)  # not returned at the poll interval
    flag.set()
    broker.runtime.wakeups.kick()
    t.join(30)
    assert done.is_set()


# -- the shared loops, driven by the smallest driver ----------------------------------------
def test_the_dispatch_loop_claims_starts_commits_in_batches_waits_and_drains(
    broker: pmsq.Broker,
) -> None:
    handled: list[int] = []

    @broker.handler("d")
    def handle(message: pmsq.Message) -> None:
        handled.append(message.payload)

    broker.queue("d").put_many(list(range(5)))
    core, _ = _core(broker, concurrency=2)
    started: list[Job] = []
    waits: list[Wait] = []
    batches: list[int] = []
    real = broker.backend.settle

    def counting(settlements: Any, *, now: float) -> Any:
        batches.append(len(settlements))
        return real(settlements, now=now)

    broker.backend.settle = counting  # type: ignore[method-assign]

    def perform(effect: Effect) -> Any:
        if isinstance(effect, Start):
            # Run the message at once up to its parked settlement: the loop
            # must commit it, with the others parked in the same round.
            started.append(effect.job)
            assert drive(core.process(effect.job), _perform, park=core.park) is PARKED
            return None
        if isinstance(effect, Wait):
            waits.append(effect)
            core.request_stop(5)  # idle: nothing left to claim
            return None
        return _perform(effect)

    assert drive(dispatch(core), perform) is True  # drained
    assert sorted(handled) == [0, 1, 2, 3, 4]
    assert len(started) == 5
    assert batches == [2, 2, 1]  # one commit per round, not one per message
    assert len(waits) == 1  # it waited only once it had nothing to do
    assert waits[0].queues == ("d",)
    assert core.abandoned
    s = broker.stats("d")
    assert (s.processed, s.ready, s.in_flight) == (5, 0, 0)


def test_the_heartbeat_loop_extends_running_leases_and_ends_with_the_run(
    broker: pmsq.Broker, clock: pmsq.ManualClock
) -> None:
    broker.declare_queue("h", lease=30.0)
    broker.handler("h")(lambda message: None)
    broker.queue("h").put("x")
    core, _ = _core(broker)
    [job] = drive(core.claim_round(), _perform)
    gen = core.process(job)
    assert isinstance(gen.send(None), Invoke)  # running: its heartbeat is scheduled
    before = job.delivery.lease_expires
    clock.advance(20)
    sleeps: list[float | None] = []

    def perform(effect: Effect) -> Any:
        if isinstance(effect, Sleep):
            sleeps.append(effect.until)
            if len(sleeps) == 1:
                core.heartbeats.add(job, 0.0, 0.0)  # as if its beat came due while asleep
            else:
                core.abandon()  # the run is over: the loop ends
            return None
        return _perform(effect)

    drive(heartbeat(core), perform)
    assert job.delivery.lease_expires == clock.time() + 30.0 > before + 10
    assert sleeps[0] is not None  # it slept until the next beat, not forever
    gen.close()
