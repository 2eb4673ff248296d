"""A worker killed with SIGKILL between claim and settle: its delivery stays in
the trace, from the message row while leased, then from the ``lease_expired``
row once the lease runs out (no row was written at the claim)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pmsq
from pmsq.cli import main
from pmsq.leases import get_many

HANG = Path(__file__).resolve().parent / "_hang_worker.py"


def _pid(process: str | None) -> int:
    return int(str(process).rpartition(":")[2])


def test_a_killed_workers_delivery_is_told_by_the_lease_expiry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "pms.db"
    with pmsq.connect(str(db), durability="normal") as b:
        b.declare_queue("calendar", lease=30.0)
        mid = b.queue("calendar").put({"booking": 7}, key="property:1")
    proc = subprocess.Popen([sys.executable, str(HANG), str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the handler runs (the claim committed)
        assert line.split() == ["started", mid, "1"]
        with pmsq.connect(str(db), durability="normal") as b:
            leased = b.backend.history(message_id=mid)
        assert [e.event for e in leased] == ["put", "delivered"]
        assert _pid(leased[1].process) == proc.pid
        worker = leased[1].worker
        assert worker is not None
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    # Later than the lease: the next claim ends it and takes the message again.
    clock = pmsq.ManualClock(time.time() + 3600)
    with pmsq.connect(str(db), clock=clock, durability="normal") as b:
        [d] = get_many(b.runtime, "calendar", 1, 0, consumer="rescuer")
        assert d.message.attempt == 2
        d.ack()
        events = b.backend.history(message_id=mid)
        here = b.backend._journal.process  # type: ignore[attr-defined]
    assert [(e.event, e.attempt, e.worker) for e in events] == [
        ("put", None, None),
        ("delivered", 1, worker),
        ("lease_expired", 1, None),
        ("delivered", 2, "rescuer"),
        ("acked", 2, None),
    ]
    assert _pid(events[1].process) == proc.pid  # the killed process claimed it
    assert [e.process for e in events[2:]] == [here] * 3
    assert events[1] == leased[1]  # read from the outcome row as from the message row

    assert main(["trace", str(db), mid, "--json"]) == 0
    [message] = json.loads(capsys.readouterr().out)["messages"]
    assert [(e["event"], e["attempt"]) for e in message["events"]] == [
        (e.event, e.attempt) for e in events
    ]
