"""Worker presence from real workers: every driver, and ``pmsq worker`` processes killed -9."""

from __future__ import annotations

import math
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

import pmsq
from pmsq.backends.presence import BEAT_INTERVAL, LIVE_WINDOW, Presence, WorkerBeat
from pmsq.clock import ManualClock
from pmsq.worker.heartbeat import PresenceBeat
from worker._support import Running, wait_for

APP = textwrap.dedent(
    """
    import os
    import pmsq

    broker = pmsq.connect(os.environ["APP_DB"], durability="normal", poll_interval=0.02)


    @broker.handler("jobs")
    def handle(message):
        pass


    @broker.handler("mail")
    async def send(message):
        pass
    """
)


def _rows(db: str) -> dict[str, WorkerBeat]:
    # Every stored row, live or not: what a killed worker leaves behind.
    with pmsq.connect(db, durability="normal") as b:
        store = Presence.of(b.backend)
        return {w.id: w for w in store.list_workers(since=-math.inf)}


def _live_at(db: str, at: float) -> set[str]:
    with pmsq.connect(db, durability="normal", clock=ManualClock(at)) as b:
        return {w.id for w in b.workers()}


def test_every_driver_is_present_while_it_runs_and_gone_after_a_graceful_stop(
    live: pmsq.Broker, start: Callable[..., Running]
) -> None:
    @live.handler("sync")
    def handle(message: pmsq.Message) -> None:
        pass

    @live.handler("async")
    async def handle_async(message: pmsq.Message) -> None:
        pass

    run = start(live, concurrency=5)
    wait_for(lambda: live.workers(), what="the first heartbeat")
    (info,) = live.workers()
    assert info.queues == ("async", "sync")
    assert (info.concurrency, info.pid, info.host) == (5, os.getpid(), socket.gethostname())
    snap = live.stats()
    assert (snap.queues["sync"].consumers, snap.queues["async"].consumers) == (1, 1)
    run.stop()
    assert live.workers() == []
    assert live.stats("sync").consumers == 0


def test_worker_processes_beat_and_a_killed_one_stops_counting_after_the_window(
    tmp_path: Path,
) -> None:
    (tmp_path / "pmsq_presence_app.py").write_text(APP)
    db = str(tmp_path / "app.db")
    env = {**os.environ, "APP_DB": db, "PYTHONUNBUFFERED": "1"}
    err = tmp_path / "supervisor.err"
    args = ["pmsq_presence_app:broker", "--processes", "2", "--concurrency", "3"]
    with open(err, "wb") as out:
        sup = subprocess.Popen(
            [sys.executable, "-m", "pmsq", "worker", *args], cwd=tmp_path, env=env, stderr=out
        )
    try:
        wait_for(lambda: len(_rows(db)) == 2, what="two worker processes beating")
        rows = _rows(db)
        children = {int(p) for p in re.findall(r"\(pid (\d+)\)", err.read_text())}
        assert {w.pid for w in rows.values()} == children
        assert sup.pid not in children, "the supervisor handles nothing: it is no consumer"
        for w in rows.values():
            assert (w.queues, w.concurrency, w.host) == (
                ("jobs", "mail"),
                3,
                socket.gethostname(),
            )
        with pmsq.connect(db, durability="normal") as b:
            assert b.stats("jobs").consumers == 2

        victim = next(iter(rows.values()))
        os.kill(victim.pid, signal.SIGKILL)
        # The supervisor restarts it: a third worker id appears.
        wait_for(lambda: len(_rows(db)) == 3, what="the restarted child's heartbeat")
        left = _rows(db)[victim.id]  # its last beat (it may have beaten once more)
        # Killed: its row stays, live through the window after its last beat, then not.
        assert victim.id in _live_at(db, left.last_seen + LIVE_WINDOW - 0.5)
        assert victim.id not in _live_at(db, left.last_seen + LIVE_WINDOW + 0.5)

        sup.send_signal(signal.SIGTERM)
        assert sup.wait(60) == 0
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.wait(30)
    # The graceful stop removed every child that stopped; only the killed one's row is left.
    assert set(_rows(db)) == {victim.id}


def test_heartbeats_are_not_per_message(live: pmsq.Broker) -> None:
    # A worker handling many messages writes its presence row once per beat
    # interval, not once per message: count the upserts.
    store = live.backend
    assert isinstance(store, Presence)
    beats: list[WorkerBeat] = []
    real = store.beat_worker

    def counting(beat: WorkerBeat) -> None:
        beats.append(beat)
        real(beat)

    store.beat_worker = counting  # type: ignore[method-assign]

    @live.handler("sync")
    def handle(message: pmsq.Message) -> None:
        pass

    q = live.queue("sync")
    run = Running("thread", live, concurrency=4)
    try:
        wait_for(lambda: beats, what="the first heartbeat")
        q.put_many([{"n": i} for i in range(300)])
        wait_for(lambda: live.stats("sync").processed == 300, what="300 messages handled")
    finally:
        run.stop()
    # However long that took, the beats are bounded by elapsed time / interval.
    elapsed = beats[-1].last_seen - beats[0].last_seen
    assert len(beats) <= 2 + elapsed / BEAT_INTERVAL


class _FlakyStore(Presence):
    """A presence store whose writes fail until told otherwise."""

    name = "flaky"

    def __init__(self) -> None:
        self.failing = True
        self.rows: dict[str, WorkerBeat] = {}

    def beat_worker(self, beat: WorkerBeat) -> None:
        if self.failing:
            raise pmsq.StorageError("the store is locked")
        self.rows[beat.id] = beat

    def forget_worker(self, worker_id: str) -> bool:
        if self.failing:
            raise pmsq.StorageError("the store is locked")
        return self.rows.pop(worker_id, None) is not None

    def list_workers(self, *, since: float) -> list[WorkerBeat]:
        return [b for b in self.rows.values() if b.last_seen >= since]


def test_a_failed_heartbeat_is_logged_and_retried_never_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = _FlakyStore()
    start = 1_800_000_000.0
    clock = ManualClock(start)
    beat = PresenceBeat(store, clock, "w1", ["sms", "email"], 4, interval=5.0)
    assert beat.next_at() == -math.inf, "the first beat is due at once"
    assert beat.due(100.0)
    assert (beat.due(100.0), beat.next_at()) == (False, 105.0)
    beat.beat()  # fails: logged
    assert "could not record the worker's heartbeat" in caplog.text
    store.failing = False
    clock.advance(5.0)
    beat.beat()
    (row,) = store.rows.values()
    assert (row.queues, row.concurrency, row.pid) == (("email", "sms"), 4, os.getpid())
    # Started at its first attempt, even though that write failed.
    assert (row.started_at, row.last_seen) == (start, start + 5.0)
    beat.leave()
    assert store.rows == {}
    assert beat.next_at() is None, "no beats after leaving"


def test_without_the_presence_family_the_beat_does_nothing() -> None:
    beat = PresenceBeat(object(), ManualClock(0.0), "w1", ["sms"], 1)
    assert beat.next_at() is None
    assert not beat.due(1e9)
    beat.start(0.0)
    beat.beat()
    beat.leave()
