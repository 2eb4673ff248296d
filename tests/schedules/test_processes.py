"""Four ``pmsq worker`` processes fire an ``every=1`` schedule while being SIGKILLed.

Each process is ``pmsq worker app:broker`` on one SQLite file. Every ~1.2 s one
of them is killed with SIGKILL (mid-transaction, perhaps) and a new one
started. ``catch_up="all"``, so no slot may be skipped either: the slots
found are exactly the run's slots, each once.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pmsq

APP = """
import os, pmsq

broker = pmsq.connect(os.environ["APP_DB"])
broker.declare_queue("idle")


@broker.handler("idle")
def idle(msg):
    pass
"""


def test_sigkilled_workers_make_exactly_one_message_per_slot(tmp_path: Path) -> None:
    db = str(tmp_path / "pms.db")
    with pmsq.connect(db) as b:
        # No handler anywhere: the messages stay to be counted. A dedup window of a
        # millisecond leaves exactly-once to the schedule's compare-and-set alone.
        b.declare_queue("ticks", dedup_window=0.001)
        b.declare_queue("idle")
        b.schedule("tick", queue="ticks", every=1.0, catch_up="all")
        (created,) = b.schedules()
    assert created.next_at is not None
    first = created.next_at
    (tmp_path / "sched_app.py").write_text(APP)
    env = {**os.environ, "APP_DB": db, "PYTHONPATH": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "pmsq", "worker", "sched_app:broker", "--concurrency", "2"]
    start = lambda: subprocess.Popen(command, env=env, cwd=tmp_path)  # noqa: E731
    procs = [start() for _ in range(4)]
    rng = random.Random(16)
    kills = 0
    try:
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.6, 1.8))
            victim = rng.randrange(len(procs))
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].wait()
            kills += 1
            procs[victim] = start()
        time.sleep(1.5)  # let the survivors fire what is due
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
    with pmsq.connect(db) as b:
        (s,) = b.schedules()
        assert s.last_at is not None
        slots = []
        while batch := b.queue("ticks").get_many(1000, timeout=0):
            for d in batch:
                slots.append(d.message.headers["pmsq.schedule"]["slot"])
                d.ack()
    n = round((s.last_at - first).total_seconds()) + 1
    expected = [(first + dt.timedelta(seconds=k)).isoformat() for k in range(n)]
    assert kills >= 4
    assert n >= 8, "the workers kept firing through the kills"
    assert sorted(slots) == expected, "every slot exactly once, none skipped"
