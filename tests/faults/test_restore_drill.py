"""The restore drill: workers running, rolling backups, SIGKILL, restore, drain.

The single server is lost (its store deleted) while workers process a
backlog and ``pmsq backup --every`` runs beside them. Restoring the newest
rolling backup and draining it must deliver every message not acked by then:
acked before the backup or delivered after the restore, each one, per-key
order kept. What was in flight at the backup is listed by ``pmsq restore``
and delivered again.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pmsq

N = 300
KEYS = 10

_WORKER = """
import sys, time, pmsq
log = open(sys.argv[2], "a", buffering=1)
with pmsq.connect(sys.argv[1]) as b:
    q = b.queue("bookings")
    while True:
        for d in q.get_many(5, timeout=0.5):
            time.sleep(0.002)  # the handler's work
            d.ack()
            log.write(f"{d.message.payload['n']}\\n")  # written only once acked
"""


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    # A SIGKILL can cut the last line short.
    return [line for line in text.split("\n")[:-1] if line]


def _wait_for(what: str, done: object, procs: list[subprocess.Popen[str]]) -> None:
    deadline = time.monotonic() + 120  # a hang guard, not a timing assertion
    while not done():  # type: ignore[operator]
        for p in procs:
            assert p.poll() is None, f"a process died while waiting for {what}"
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.02)


@pytest.mark.timeout(300)
def test_restore_drill(tmp_path: Path) -> None:
    live = tmp_path / "server"
    live.mkdir()
    store = live / "pms.db"
    with pmsq.connect(str(store), durability="normal") as b:
        q = b.declare_queue("bookings")
        for n in range(N):
            q.put({"n": n}, key=f"property:{n % KEYS}")
    backups = tmp_path / "backups"
    backups.mkdir()
    acked_log = tmp_path / "acked.log"
    roller = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pmsq",
            "backup",
            str(store),
            str(backups),
            "--every",
            "0.1",
            "--keep",
            "5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    workers = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(store), str(acked_log)], text=True)
        for _ in range(2)
    ]
    try:
        backups_before = 0

        def enough() -> bool:
            nonlocal backups_before
            backups_before = len(list(backups.glob("pms-*Z.db")))
            return len(_lines(acked_log)) >= N // 3 and backups_before >= 2

        _wait_for("a third acked and two backups", enough, [roller, *workers])
        for w in workers:
            w.send_signal(signal.SIGKILL)
        for w in workers:
            w.wait()
        roller.send_signal(signal.SIGTERM)
        out, err = roller.communicate(timeout=60)
    finally:
        for p in [roller, *workers]:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert (roller.returncode, err) == (0, "")
    assert out.splitlines()[-1].startswith("stopped after ")
    acked = [int(line) for line in _lines(acked_log)]
    assert len(acked) < N, "the workers finished before the disaster"

    # The server is gone: its store and WAL with it.
    for suffix in ("", "-wal", "-shm"):
        (live / f"pms.db{suffix}").unlink(missing_ok=True)
    names = sorted(p.name for p in backups.iterdir())
    assert 2 <= len(names) <= 5  # pruned to --keep, nothing half-written
    newest = backups / names[-1]

    done = subprocess.run(
        [sys.executable, "-m", "pmsq", "restore", str(newest), str(store)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    listed = [
        line.split()[1] for line in done.stdout.splitlines() if line.startswith("  bookings ")
    ]

    drained: list[tuple[int, str]] = []
    with pmsq.connect(str(store)) as b:
        q = b.queue("bookings")
        while batch := q.get_many(50, timeout=0):
            for d in batch:
                drained.append((d.message.payload["n"], d.message.id))
                d.ack()
        assert q.stats().depth == 0
    got = [n for n, _ in drained]
    assert len(got) == len(set(got)), "a message delivered twice from the restored store"
    # Nothing lost: each message was acked before the disaster or is in the backup.
    assert set(got) | set(acked) == set(range(N))
    # What was in flight at the backup came back, as listed.
    assert set(listed) <= {mid for _, mid in drained}
    # Per-key order holds in the restored store.
    for k in range(KEYS):
        ns = [n for n in got if n % KEYS == k]
        assert ns == sorted(ns), f"property:{k} out of order: {ns}"
