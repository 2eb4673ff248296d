"""I/O errors at commit: ``OutcomeUnknown``, and retrying with the same dedup_id is safe.

``strace`` fails some ``fdatasync`` calls of a producer process with EIO (SQLite
syncs with ``fdatasync``). The WAL frames of such a commit are already
written: the live connection treats the transaction as rolled back, but a
process that dies then leaves them in its WAL, where recovery may find them
committed. Either way a put retried with its dedup_id yields exactly one message.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pmsq
from faults._support import ROLES, integrity, table_rows

COUNT = 40


def _failing_fdatasync(inject: str, cmd: list[str]) -> list[str]:
    """``cmd`` under strace, with ``inject`` (an strace fault spec) applied to fdatasync."""
    return ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=fdatasync", "-e", inject, *cmd]


def _producer(db: Path, *flags: str, inject: str | None) -> tuple[int, dict[str, object]]:
    cmd = [sys.executable, str(ROLES / "dedup_producer.py"), str(db), "orders", str(COUNT), *flags]
    if inject is not None:
        cmd = _failing_fdatasync(inject, cmd)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout.splitlines()[-1])


@pytest.fixture
def store(db_path: Path) -> Path:
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    probe = subprocess.run(["strace", "-qq", "-o", "/dev/null", "true"], check=False)
    if probe.returncode != 0:
        pytest.skip("strace cannot trace here (ptrace not permitted)")
    with pmsq.connect(str(db_path)) as broker:
        broker.declare_queue("orders", dedup_window=None)
    return db_path


def _assert_each_once(db: Path) -> None:
    rows = table_rows(db, "SELECT dedup_id, payload FROM pmsq_messages ORDER BY seq")
    assert sorted(r[0] for r in rows) == sorted(f"d-{i}" for i in range(COUNT))
    assert sorted(json.loads(r[1])["n"] for r in rows) == list(range(COUNT))
    assert integrity(db) == ["ok"]


@pytest.mark.timeout(180)
def test_failed_fsync_is_outcome_unknown_and_retry_stores_once(store: Path) -> None:
    code, result = _producer(store, inject="inject=fdatasync:error=EIO:when=5+7")
    assert code == 0
    assert result["unknown"] > 0, "no fdatasync failed: the injection did not happen"
    assert result["ok"] == COUNT
    message = str(result["message"])
    assert str(store) in message
    assert "may or may not be stored" in message
    assert "dedup_id" in message
    _assert_each_once(store)


@pytest.mark.timeout(180)
def test_crash_after_outcome_unknown_then_retry_stores_once(store: Path) -> None:
    """The producer dies right after the failed commit, leaving its WAL behind."""
    code, result = _producer(
        store, "--crash-on-unknown", inject="inject=fdatasync:error=EIO:when=12"
    )
    assert code == 3, "the producer should have died on its first OutcomeUnknown"
    assert result["unknown"] == 1
    # A new process retries every put; recovery of the dead one's WAL happens first.
    code, result = _producer(store, inject=None)
    assert (code, result["unknown"]) == (0, 0)
    _assert_each_once(store)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("verb", ["ack", "retry", "dead"])
def test_failed_fsync_while_settling_loses_and_duplicates_nothing(
    store: Path, verb: str, tmp_path: Path
) -> None:
    """EIO on the Nth fdatasync of a consumer that acks, retries or dead-letters.

    The consumer gets a StorageError for the settlements that hit it and goes
    on; afterwards every message is in exactly one place that its outcome
    allows: an ack that returned is gone for good, a dead letter that returned
    is a dead letter, and a settlement whose outcome is unknown either took
    effect or left the message to come back after its lease. Never lost, never
    both dead and waiting, and the file is sound.
    """
    errors = 0
    for when in (1, 2, 3, 4):
        db = tmp_path / f"settle-{verb}-{when}.db"
        with pmsq.connect(str(db)) as broker:
            q = broker.declare_queue("orders", lease=0.2, max_attempts=10)
            ids = q.put_many([{"n": i} for i in range(6)])
        cmd = _failing_fdatasync(
            f"inject=fdatasync:error=EIO:when={when}",
            [sys.executable, str(ROLES / "settler.py"), str(db), "orders", verb],
        )
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr  # no crash
        outcomes: dict[str, str] = json.loads(done.stdout.splitlines()[-1])
        assert set(outcomes) <= set(ids)
        errors += sum(v != "ok" for v in outcomes.values())
        assert integrity(db) == ["ok"]
        with pmsq.connect(str(db)) as broker:
            dead = {d.message.id for d in broker.dead_letters("orders").list()}
            back: list[str] = []
            # Drain until nothing is waiting or leased: leases left behind run out
            # (0.2 s) and their messages come back, however slow the machine is.
            deadline = time.monotonic() + 30
            while broker.stats("orders").depth and time.monotonic() < deadline:
                for d in broker.queue("orders").get_many(10, timeout=0.5):
                    back.append(d.message.id)
                    d.ack()
        assert len(back) == len(set(back))  # nothing duplicated
        assert not dead & set(back)
        for mid in set(ids) - set(outcomes):  # not claimed by the consumer: untouched
            assert mid in back
        for mid, outcome in outcomes.items():
            if verb == "ack" and outcome == "ok":
                assert mid not in back
                assert mid not in dead
            elif verb == "dead" and outcome == "ok":
                assert mid in dead
            elif verb == "retry" or (verb == "dead" and outcome != "ok"):
                assert mid in back or mid in dead  # never lost
            if verb != "dead":
                assert mid not in dead
    assert errors > 0, "no settlement met the injected error"
