"""A disk that fills up under a running Worker: acks and dead letters fail cleanly,
the worker backs off instead of crashing, and it resumes by itself once space is
freed: nothing lost, nothing acked twice, the same Worker and Broker throughout.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

import pmsq
from faults._support import checkpoint, integrity
from faults.test_disk_full import tiny_disk  # noqa: F401 - the fixture

JOBS = 40
POISON = 5


def _fill(directory: Path) -> Path:
    """Write a filler file until the disk refuses more: the disk is then full."""
    filler = directory / "filler"
    # Unbuffered: nothing is left to flush (and fail again) when the file closes.
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\x00" * 65536)
        except OSError:
            pass
    return filler


@pytest.mark.timeout(180)
def test_worker_rides_out_a_full_disk_and_resumes_by_itself(
    tiny_disk: Path,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tiny_disk / "pms.db"
    handled: Counter[str] = Counter()
    started = threading.Semaphore(0)
    gate = threading.Event()
    lock = threading.Lock()
    caplog.set_level(logging.WARNING)

    with pmsq.connect(str(path)) as broker:
        jobs = broker.declare_queue("jobs", lease=1.0, max_attempts=1000)
        poison = broker.declare_queue("poison", lease=1.0, max_attempts=1000)
        ids = jobs.put_many([{"n": i} for i in range(JOBS)])
        bad = poison.put_many([{"n": i} for i in range(POISON)])

        @broker.handler("jobs", concurrency=2)
        def work(msg: pmsq.Message) -> None:
            started.release()
            gate.wait(60)  # the first handlers finish only once the disk is full
            with lock:
                handled[msg.id] += 1

        @broker.handler("poison", concurrency=2)  # so both queues are mid-handler
        def reject(msg: pmsq.Message) -> None:
            started.release()
            gate.wait(60)
            raise pmsq.Reject("unusable")

        worker = pmsq.Worker(broker, concurrency=4)
        worker.start()
        try:
            for _ in range(4):
                assert started.acquire(timeout=30), "the worker never started handlers"
            # Empty the WAL, so the next commit has to grow it, then fill the disk.
            checkpoint(path)
            filler = _fill(tiny_disk)
            gate.set()  # the running handlers now finish: their settlements hit the full disk
            deadline = time.monotonic() + 30
            while not any("disk full" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, "no settlement ever failed on the full disk"
                time.sleep(0.05)
            time.sleep(1.5)  # leases run out meanwhile; claims fail and back off
            assert _dispatcher_alive()  # no crash: the worker backs off and waits

            filler.unlink()  # the operator makes room; nobody restarts anything
            deadline = time.monotonic() + 90
            while True:
                s = broker.stats()
                if s.queues["jobs"].depth == 0 and s.queues["poison"].dead == POISON:
                    break
                assert time.monotonic() < deadline, f"did not resume: {s.queues}"
                time.sleep(0.1)
        finally:
            worker.stop(timeout=10)

        assert set(handled) == set(ids)  # every job processed, none lost
        assert {d.message.id for d in broker.dead_letters("poison").list()} == set(bad)
        assert broker.stats("jobs").processed >= JOBS
        failures = [r.getMessage() for r in caplog.records if "disk full" in r.getMessage()]
        assert any(str(path) in m for m in failures)  # the error names the file
        # Both an ack and a dead-lettering met the full disk, and both recovered.
        assert any("could not settle" in m and "queue=jobs" in m for m in failures)
        assert any("could not settle" in m and "queue=poison" in m for m in failures)
    assert integrity(path) == ["ok"]


def _dispatcher_alive() -> bool:
    return any(t.name == "pmsq-worker-dispatch" for t in threading.enumerate())


def test_filler_helper_really_fills(tiny_disk: Path) -> None:  # noqa: F811
    filler = _fill(tiny_disk)
    try:
        with pytest.raises(OSError), open(tiny_disk / "more", "wb") as f:
            f.write(b"x" * 65536)
            f.flush()
            os.fsync(f.fileno())
    finally:
        filler.unlink()
