"""Prefetch: claiming ahead of the free handler slots.

The lifecycle driven by hand (bounds, claim order, heartbeats of held
messages, per-key order under random interleavings), the three drivers
(a stop hands held messages back unspent, a cancelled held message never
runs), and two real worker processes sharing one queue.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pmsq
from pmsq.cli import main
from pmsq.worker.effects import Call, Effect, Invoke, Settle, Sleep
from pmsq.worker.lifecycle import Job, Lifecycle, drive
from pmsq.worker.loops import heartbeat
from pmsq.worker.middleware import Hooks
from pmsq.worker.options import select_handlers
from pmsq.worker.prefetch import PREFETCH_CAP, Prefetch
from worker._support import Running, log_records, wait_for


def _perform(effect: Effect) -> Any:
    """The smallest driver: store calls inline, sync handlers inline."""
    if isinstance(effect, Call):
        return effect.fn()
    if isinstance(effect, Settle):
        return effect.run()
    assert isinstance(effect, Invoke)
    effect.invocation.run_sync()
    return None


def _core(broker: pmsq.Broker, concurrency: int, prefetch: int | None) -> Lifecycle:
    return Lifecycle(
        broker,
        select_handlers(broker, None),
        concurrency,
        Hooks([]),
        kick=lambda: None,
        prefetch=prefetch,
    )


def _payloads(jobs: list[Job]) -> list[Any]:
    return [job.delivery.message.payload for job in jobs]


# -- the lifecycle by hand ----------------------------------------------------------------
def test_prefetch_holds_more_than_the_slots_but_never_more_than_its_bound(
    broker: pmsq.Broker,
) -> None:
    handled: list[int] = []
    broker.handler("p")(lambda message: handled.append(message.payload))
    broker.queue("p").put_many(list(range(12)))
    core = _core(broker, concurrency=2, prefetch=3)

    started = drive(core.claim_round(), _perform)
    assert _payloads(started) == [0, 1]  # the free slots, oldest first
    assert core.held == 3  # and three more claimed ahead
    assert broker.stats("p").in_flight == 5  # all five leased in the store
    assert broker.stats("p").ready == 7
    # Full (slots and prefetch): another round claims nothing.
    assert drive(core.claim_round(), _perform) == []
    assert broker.stats("p").in_flight == 5

    # A handler that ends starts the next held message in its slot, in claim order.
    drive(core.process(started[0]), _perform)
    nxt = core.next_job()
    assert nxt is not None
    assert _payloads([nxt]) == [2]
    assert core.held == 2
    # Held down to 2 of 3, above half the bound: still no claim.
    assert drive(core.claim_round(), _perform) == []
    assert broker.stats("p").in_flight == 4
    drive(core.process(nxt), _perform)
    nxt = core.next_job()
    assert nxt is not None
    assert _payloads([nxt]) == [3]
    # Down to one held (half the bound): the next round claims up to the bound again.
    assert drive(core.claim_round(), _perform) == []  # both slots busy
    assert core.held == 3
    assert broker.stats("p").in_flight == 5
    assert core.running == 5

    # Draining everything never holds more than slots + bound.
    jobs = [started[1], nxt]
    peak = 0
    while jobs:
        drive(core.process(jobs.pop(0)), _perform)
        more = core.next_job()
        if more is not None:
            jobs.append(more)
        jobs += drive(core.claim_round(), _perform)
        peak = max(peak, broker.stats("p").in_flight)
    assert peak <= 2 + 3
    assert sorted(handled) == list(range(12))  # each once
    assert core.idle()


def test_prefetch_zero_claims_only_what_can_start(broker: pmsq.Broker) -> None:
    broker.handler("z")(lambda message: None)
    broker.queue("z").put_many(list(range(6)))
    core = _core(broker, concurrency=2, prefetch=0)
    assert len(drive(core.claim_round(), _perform)) == 2
    assert core.held == 0
    assert broker.stats("z").in_flight == 2


def test_the_adaptive_bound_follows_the_handler_rate_and_the_lease() -> None:
    def bound(seconds: float | None, lease: float, *, running: int = 0, now: float = 0.0) -> int:
        p = Prefetch(concurrency=4, fixed=None)
        if seconds is not None:
            p.handler_ended(seconds, now=0.0)
        return p.bound(running, now, lease)

    assert bound(None, 30.0) == 0  # no handler has ended: the rate is unknown
    assert bound(0.001, 30.0) == PREFETCH_CAP  # 1 ms handlers: 400 in 0.1 s, capped
    assert bound(0.05, 30.0) == 8  # 80/s: eight in a tenth of a second
    assert bound(0.05, 0.15) == 4  # what starts within a third of the lease
    assert bound(10.0, 30.0) == 4  # slow handlers: at least concurrency ...
    assert bound(10.0, 3.0) == 0  # ... unless the lease would not cover it
    # Handlers running for 10 s since the last one ended count as 10 s handlers.
    assert bound(0.001, 3.0, running=4, now=10.0) == 0
    assert bound(0.001, 3.0, running=0, now=10.0) == PREFETCH_CAP  # idle: no evidence
    fixed = Prefetch(concurrency=4, fixed=3)
    fixed.handler_ended(0.001, now=0.0)
    assert fixed.bound(4, 100.0, 0.1) == 3  # a fixed prefetch is the bound as is


def test_held_leases_are_extended_by_the_heartbeat(
    broker: pmsq.Broker, clock: pmsq.ManualClock
) -> None:
    broker.declare_queue("h", lease=30.0)
    broker.handler("h")(lambda message: None)
    broker.queue("h").put_many(["a", "b", "c"])
    core = _core(broker, concurrency=1, prefetch=2)
    [running] = drive(core.claim_round(), _perform)
    held = list(core._held)
    assert len(held) == 2
    for job in held:
        assert job in core.heartbeats  # beating from the claim on, not from the start
    before = [job.delivery.lease_expires for job in held]
    clock.advance(20)  # two thirds of the lease: the beat is due
    sleeps = 0

    def perform(effect: Effect) -> Any:
        nonlocal sleeps
        if isinstance(effect, Sleep):
            sleeps += 1
            if sleeps == 1:
                for job in [running, *held]:
                    core.heartbeats.hurry(job, 0.0)  # as if their beats came due
            else:
                core.abandon()
            return None
        return _perform(effect)

    drive(heartbeat(core), perform)
    for job, was in zip(held, before, strict=True):
        assert job.delivery.lease_expires == clock.time() + 30.0 > was
    # The store agrees: the held messages are still leased to this worker.
    assert broker.stats("h").in_flight == 3


def test_a_held_message_whose_lease_ran_out_is_never_started(
    broker: pmsq.Broker, clock: pmsq.ManualClock
) -> None:
    handled: list[str] = []
    broker.declare_queue("x", lease=5.0)
    broker.handler("x")(lambda message: handled.append(message.payload))
    broker.queue("x").put_many(["first", "stale"])
    core = _core(broker, concurrency=1, prefetch=1)
    [first] = drive(core.claim_round(), _perform)
    drive(core.process(first), _perform)
    clock.advance(6)  # frozen past the lease: no heartbeat ran
    stale = core.next_job()
    assert stale is not None
    drive(core.process(stale), _perform)
    assert handled == ["first"]  # "stale" may be someone else's now: never started
    assert stale.gone == "lease lost"
    assert not stale.invocation.started
    assert core.idle()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    keys=st.lists(st.sampled_from(["a", "b", "c", None]), min_size=1, max_size=24),
    steps=st.lists(st.integers(0, 50), max_size=120),
    concurrency=st.integers(1, 3),
    prefetch=st.integers(0, 6),
)
def test_per_key_order_holds_with_prefetch(
    keys: list[str | None], steps: list[int], concurrency: int, prefetch: int
) -> None:
    """Random interleavings of claim rounds, handler ends and chained starts:
    each key's messages run one at a time, in put order, and all run once."""
    with tempfile.TemporaryDirectory() as tmp:
        with pmsq.connect(
            os.path.join(tmp, "k.db"), durability="memory", clock=pmsq.ManualClock()
        ) as broker:
            handled: list[tuple[str | None, int]] = []
            broker.handler("k")(lambda m: handled.append((m.key, m.payload)))
            broker.queue("k").put_many([pmsq.NewMessage(i, key=k) for i, k in enumerate(keys)])
            core = _core(broker, concurrency, prefetch)
            running: list[Job] = []

            def start(jobs: list[Job]) -> None:
                for job in jobs:
                    key = job.delivery.message.key
                    if key is not None:
                        others = [r.delivery.message.key for r in running]
                        assert key not in others, f"two messages of key {key} at once"
                    running.append(job)

            def finish(i: int) -> None:
                job = running.pop(i % len(running))
                drive(core.process(job), _perform)
                nxt = core.next_job()
                if nxt is not None:
                    start([nxt])

            for step in steps:
                if step % 3 == 0 or not running:
                    start(drive(core.claim_round(), _perform))
                else:
                    finish(step)
            for _ in range(10 * len(keys) + 10):
                if not running:
                    start(drive(core.claim_round(), _perform))
                    if not running:
                        break
                else:
                    finish(0)
            assert sorted(p for _, p in handled) == list(range(len(keys)))  # all, once
            for key in set(keys) - {None}:
                mine = [p for k, p in handled if k == key]
                assert mine == sorted(mine), f"key {key} out of order: {mine}"
            assert core.idle()


# -- the drivers ----------------------------------------------------------------------------
def test_a_stop_hands_held_messages_back_without_spending_an_attempt(
    live: pmsq.Broker, start: Callable[..., Running]
) -> None:
    release = threading.Event()
    ran: list[int] = []

    @live.handler("s")
    def handle(message: pmsq.Message) -> None:
        ran.append(message.payload)
        if message.payload == 0:
            release.wait(30)

    q = live.queue("s")
    q.put(0, priority=1)
    q.put_many(list(range(1, 6)))
    run = start(live, concurrency=1, prefetch=5)
    wait_for(
        lambda: ran == [0] and live.stats("s").in_flight == 6, what="one running and five held"
    )
    stopper = threading.Thread(target=run.stop)
    stopper.start()
    # Handed back at once, while the running handler still runs.
    wait_for(lambda: live.stats("s").ready == 5, what="the held messages handed back")
    assert ran == [0]
    release.set()
    stopper.join(60)
    assert ran == [0]
    s = live.stats("s")
    assert (s.processed, s.ready, s.in_flight) == (1, 5, 0)
    again = q.get_many(10, timeout=0)
    assert sorted(d.message.payload for d in again) == [1, 2, 3, 4, 5]
    assert {d.message.attempt for d in again} == {1}  # no attempt spent


def test_held_messages_go_back_in_one_store_call_and_one_by_one_if_that_fails(
    broker: pmsq.Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker.handler("h")(lambda message: None)
    broker.queue("h").put_many(list(range(8)))
    core = _core(broker, concurrency=1, prefetch=5)
    drive(core.claim_round(), _perform)
    assert core.held == 5
    calls: list[int] = []
    real = broker.backend.release

    def counted(receipts: Any, *, now: float) -> None:
        calls.append(len(receipts))
        real(receipts, now=now)

    monkeypatch.setattr(broker.backend, "release", counted)
    assert core.hand_back_held() == 5
    assert calls == [5], "a stop with many held messages commits once, not once per message"
    assert broker.stats("h").ready == 7

    # A store that refuses the batch: each is tried alone, so the others go back.
    drive(core.claim_round(), _perform)
    assert core.held == 5
    calls.clear()

    def refuses_batches(receipts: Any, *, now: float) -> None:
        calls.append(len(receipts))
        if len(receipts) > 1:
            raise pmsq.StorageError("disk I/O error")
        real(receipts, now=now)

    monkeypatch.setattr(broker.backend, "release", refuses_batches)
    assert core.hand_back_held() == 5
    assert calls == [5, 1, 1, 1, 1, 1]
    assert broker.stats("h").ready == 7
    again = broker.queue("h").get_many(10, timeout=0)
    assert {d.message.attempt for d in again} == {1}  # no attempt spent either way


def test_a_cancelled_held_message_is_never_run(
    live: pmsq.Broker, start: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="pmsq.worker")
    release = threading.Event()
    ran: list[str] = []
    # A short lease: held messages are beaten every 0.1 s, so the cancel is seen soon.
    q = live.declare_queue("c", lease=0.3)

    @live.handler("c")
    def handle(message: pmsq.Message) -> None:
        ran.append(message.payload)
        if message.payload == "blocker":
            release.wait(30)

    q.put("blocker", priority=1)
    victim = q.put("victim")
    q.put("after")
    start(live, concurrency=1, prefetch=4)
    wait_for(
        lambda: ran == ["blocker"] and live.stats("c").in_flight == 3,
        what="one running and two held",
    )
    assert q.cancel(victim)
    wait_for(
        lambda: [r for r in log_records(caplog, "message_gone") if r["message_id"] == victim],
        what="the worker to notice the cancel",
    )
    release.set()
    wait_for(lambda: live.stats("c").processed == 2, what="the others to be handled")
    assert ran == ["blocker", "after"]
    [discarded] = [r for r in log_records(caplog, "outcome_discarded") if r["message_id"] == victim]
    assert (discarded["why"], discarded["handler"]) == ("cancelled", "never started")


@pytest.mark.parametrize("bad", [-1, 1.5, "8", True])
def test_bad_prefetch_values_are_refused(broker: pmsq.Broker, bad: object) -> None:
    broker.handler("b")(lambda message: None)
    for make in (pmsq.Worker, pmsq.AsyncWorker):
        with pytest.raises(pmsq.ConfigurationError, match=r"prefetch must be None .* >= 0"):
            make(broker, prefetch=bad)  # type: ignore[arg-type]


def test_the_cli_refuses_a_negative_prefetch(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "nowhere:broker", "--prefetch", "-1"]) != 0
    assert "--prefetch must be at least 0, got -1" in capsys.readouterr().err


# -- two processes -----------------------------------------------------------------------------
FAIR_APP = textwrap.dedent(
    """
    import os, time
    import pmsq

    broker = pmsq.connect(os.environ["APP_DB"], durability="normal", poll_interval=0.02)
    LOG = os.environ["APP_LOG"]


    @broker.handler("fair")
    def handle(message):
        time.sleep(0.004)
        with open(LOG, "a") as f:  # one small O_APPEND write per line: atomic
            f.write(f"{os.getpid()}\\n")
    """
)


@pytest.mark.timeout(180)
def test_two_worker_processes_with_prefetch_share_one_queue(tmp_path: Path) -> None:
    (tmp_path / "pmsq_fair_app.py").write_text(FAIR_APP)
    env = {
        **os.environ,
        "APP_DB": str(tmp_path / "fair.db"),
        "APP_LOG": str(tmp_path / "handled.log"),
        "PYTHONUNBUFFERED": "1",
    }
    total = 1200
    with pmsq.connect(env["APP_DB"], durability="normal") as b:
        b.declare_queue("fair")
    command = [sys.executable, "-m", "pmsq", "worker", "pmsq_fair_app:broker"]
    command += ["--concurrency", "4"]
    procs: list[subprocess.Popen[bytes]] = []
    errs = [tmp_path / f"w{i}.err" for i in range(2)]
    try:
        for err in errs:
            with open(err, "wb") as f:
                procs.append(
                    subprocess.Popen(
                        command,
                        cwd=tmp_path,
                        env=env,
                        stderr=f,
                    )
                )
        for err in errs:
            wait_for(lambda err=err: "worker started" in err.read_text(), what="the workers")
        with pmsq.connect(env["APP_DB"], durability="normal") as b:
            # All at once: a worker that claimed without bound would take them all.
            b.queue("fair").put_many(list(range(total)))

        def handled() -> list[str]:
            log = Path(env["APP_LOG"])
            return log.read_text().split() if log.exists() else []

        wait_for(lambda: len(handled()) >= total, timeout=150, what="the queue drained")
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            assert p.wait(30) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(30)
    counts = Counter(handled())
    assert sum(counts.values()) == total  # each message once
    assert len(counts) == 2, counts
    for pid, n in counts.items():
        assert n >= total // 4, f"worker {pid} handled only {n} of {total}: {counts}"


def test_hooks_nobody_overrides_are_not_called(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hot path's hooks cost a look-up, not a call per middleware, when unused."""
    calls: list[str] = []

    class SettleOnly(pmsq.Middleware):
        def on_settle(self, message: Any, outcome: Any, error: Any) -> None:
            calls.append("on_settle")

    class Dynamic(pmsq.Middleware):
        def __getattribute__(self, name: str) -> Any:
            if name == "on_claim":
                return lambda message: calls.append("dynamic on_claim")
            return super().__getattribute__(name)

    plain = Hooks([SettleOnly(), pmsq.Middleware()])
    assert not plain.has("on_claim")
    assert not plain.has("before_process")
    assert plain.has("on_settle")
    # Made observable: had the base's no-op been called, this would record it.
    monkeypatch.setattr(pmsq.Middleware, "on_claim", lambda self, m: calls.append("base"))
    monkeypatch.setattr(pmsq.Middleware, "before_process", lambda self, m: calls.append("base"))
    plain("on_claim", None)
    plain.caller("before_process")(None)
    plain("on_settle", None, None, None)
    assert calls == ["on_settle"]
    monkeypatch.undo()
    calls.clear()
    # A hook found only on the instance (here through __getattribute__) still counts.
    dynamic = Hooks([Dynamic()])
    assert dynamic.has("on_claim")
    assert not dynamic.has("on_settle")
    dynamic("on_claim", None)
    assert calls == ["dynamic on_claim"]
