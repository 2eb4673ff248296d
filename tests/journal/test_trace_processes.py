"""A message that failed twice in one worker process and then succeeded in another:
its journal, and ``pmsq trace``, show exactly those events, in order, with both pids."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import pmsq
from pmsq.cli import main

ROLE = Path(__file__).resolve().parents[1] / "roles" / "trace_worker.py"


def _run_worker(db: Path, mode: str) -> int:
    proc = subprocess.Popen(
        [sys.executable, str(ROLE), str(db), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, f"{mode} worker exited {proc.returncode}: {err}"
    return proc.pid


def test_two_failures_in_one_process_then_success_in_another(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "pms.db"
    with pmsq.connect(str(db), durability="normal") as b:
        b.declare_queue("calendar")
        mid = b.queue("calendar").put(
            {"booking": 1}, key="property:4521", tenant="acme", dedup_id="booking-1"
        )
    failing = _run_worker(db, "fail")
    succeeding = _run_worker(db, "succeed")

    with pmsq.connect(str(db), durability="normal") as b:
        events = b.backend.history(message_id=mid)
    assert [(e.event, e.attempt) for e in events] == [
        ("put", None),
        ("delivered", 1),
        ("retried", 1),
        ("delivered", 2),
        ("retried", 2),
        ("delivered", 3),
        ("acked", 3),
    ]
    pids = [int(str(e.process).rpartition(":")[2]) for e in events]
    assert pids[1:5] == [failing] * 4
    assert pids[5:] == [succeeding] * 2
    workers = {e.worker for e in events if e.event == "delivered"}
    assert len(workers) == 2  # one worker id per process
    for e, n in ((events[2], 1), (events[4], 2)):
        assert e.detail["error_type"] == "ValueError"
        assert e.detail["error"] == f"ValueError: calendar API down (attempt {n}, pid {failing})"
        assert e.detail["delay"] >= 0
        assert "duration_ms" in e.detail
    assert "duration_ms" in events[6].detail
    assert all(e.key == "property:4521" and e.tenant == "acme" for e in events)

    # The same story through the command line, by dedup id.
    assert main(["trace", str(db), "booking-1", "--json"]) == 0
    out = capsys.readouterr().out
    data = json.loads(out)
    [message] = data["messages"]
    assert message["id"] == mid
    assert message["state"] == "acked"
    assert [e["event"] for e in message["events"]] == [e.event for e in events]
