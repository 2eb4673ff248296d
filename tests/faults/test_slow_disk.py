"""A slow disk with short leases: every ``fdatasync`` of the producer and the
consumers is delayed (``strace -e inject=fdatasync:delay_enter=...``), so acks
and lease extensions take longer than a lease's slack and deliveries run out
mid-handler. Nothing may be lost, nothing acked may come back, late settles
must be rejected (``LeaseLost``), and the checker must find the history valid:
redeliveries are at-least-once, never overlapping live leases.

The roles (``history_producer.py --count``, ``worker_consumer.py`` and
``aio_consumer.py`` with ``--drain --until-file``) run under strace and end by
themselves: a killed strace would leave its tracees running.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import pmsq
from faults._support import ROLES, integrity, stderr_of
from faults._torture import QUEUE, final_state
from pmsq.testing.checker import check, read_histories

MAX_ATTEMPTS = 1000


@pytest.fixture
def strace() -> str:
    path = shutil.which("strace")
    if path is None:
        pytest.skip("strace is not installed (Debian package strace)")
    probe = subprocess.run([path, "-qq", "-o", "/dev/null", "true"], check=False)
    if probe.returncode != 0:
        pytest.skip("strace cannot trace here (ptrace not permitted)")
    return path


def _slowly(strace: str, delay_us: int, script: str, *args: str, log: Path) -> Any:
    cmd = [
        strace,
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "-e",
        "trace=fdatasync",
        "-e",
        f"inject=fdatasync:delay_enter={delay_us}",
        sys.executable,
        str(ROLES / script),
        *args,
    ]
    with log.open("wb") as err:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)


def _stop_tree(proc: Any) -> None:
    """SIGKILL strace's tracees (our grandchildren, by PID), then strace itself."""
    if proc.stdout is not None:
        proc.stdout.close()
    if proc.poll() is not None:
        return
    with contextlib.suppress(OSError):
        for pid in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _run(tmp_path: Path, strace: str, *, delay_us: int, lease: float, count: int) -> None:
    db, logs = tmp_path / "pms.db", tmp_path / "logs"
    logs.mkdir()
    marker = logs / "all-put"
    with pmsq.connect(str(db)) as broker:
        broker.declare_queue(
            QUEUE,
            lease=lease,
            max_attempts=MAX_ATTEMPTS,
            backoff=pmsq.Backoff(base=0.02, cap=0.1),
        )
    procs: list[tuple[str, Any]] = []
    try:
        consumer_args = ["--drain", "--until-file", str(marker), "--concurrency", "4"]
        for name, script in (("wor1", "worker_consumer.py"), ("aio1", "aio_consumer.py")):
            args = [str(db), QUEUE, str(logs / f"{name}.jsonl"), "--proc", name]
            args += [*consumer_args, "--work-ms", "0", "40", "--fail-share", "0.05"]
            procs.append((name, _slowly(strace, delay_us, script, *args, log=logs / name)))
        prod = [str(db), QUEUE, str(logs / "prod.jsonl"), "--proc", "prod", "--count", str(count)]
        prod += ["--batch", "3", "--pause-ms", "0", "10"]
        procs.append(
            ("prod", _slowly(strace, delay_us, "history_producer.py", *prod, log=logs / "prod"))
        )
        for name, p in procs:
            assert p.stdout.readline() == b"ready\n", stderr_of(logs / name)
        assert procs[-1][1].wait(timeout=300) == 0, stderr_of(logs / "prod")
        marker.touch()
        for name, p in procs[:-1]:
            assert p.wait(timeout=180) == 0, stderr_of(logs / name)
    finally:
        for _, p in procs:
            _stop_tree(p)

    events = read_histories(sorted(logs.glob("*.jsonl")))
    found = check(events, final_state(db), max_attempts=MAX_ATTEMPTS)
    detail = "\n".join(f"{a.kind} {a.message_id}: {a.detail}" for a in found[:20])
    assert found == [], detail
    assert integrity(db) == ["ok"]
    oks = sum(1 for e in events if e["op"] == "put_ok")
    acked = {e["id"] for e in events if e["op"] == "ack_ok"}
    assert oks == count
    assert len(acked) == count
    redelivered = sum(1 for e in events if e["op"] == "delivered" and e["attempt"] > 1)
    assert redelivered > 0, "no lease ran out: the disk was not slow enough to test anything"


@pytest.mark.timeout(240)
def test_slow_fsync_with_short_leases(tmp_path: Path, strace: str) -> None:
    """Each fdatasync takes 0.1 s; leases are 0.25 s."""
    _run(tmp_path, strace, delay_us=100_000, lease=0.25, count=90)


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize(("delay_us", "lease", "count"), [(300_000, 0.5, 200), (50_000, 0.1, 600)])
def test_slow_fsync_long(
    tmp_path: Path, strace: str, delay_us: int, lease: float, count: int
) -> None:
    _run(tmp_path, strace, delay_us=delay_us, lease=lease, count=count)
