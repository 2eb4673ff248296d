"""``pmsq migrate`` between SQLite stores: everything carried, resumable, nothing in SRC changed."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pmsq
from pmsq.migrate import BackendSource, copy
from tests.cli.conftest import Run
from tests.migrate._support import fill_source, snapshot


@pytest.fixture
def src(tmp_path: Path) -> Path:
    path = tmp_path / "src.db"
    with pmsq.connect(str(path), durability="normal") as b:
        fill_source(b)
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snap(path: Path) -> dict[str, object]:
    with pmsq.connect(str(path)) as b:
        return snapshot(b.backend)


def test_migrate_copies_everything_and_verifies(cli: Run, src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst.db"
    before = _digest(src)
    code, out, err = cli("migrate", str(src), f"sqlite:///{dst}", "--batch", "5")
    assert (code, err) == (0, "")
    assert "37 message(s) copied, 0 already there, 30 dedup id(s)" in out
    assert "verified" in out
    assert "MISMATCH" not in out
    assert _digest(src) == before  # the source is only read
    expected, got = _snap(src), _snap(dst)
    assert got == expected
    email = got["messages"]["email"]  # type: ignore[index]
    assert [(m.state, m.holds_key) for m in email] == [("dead", True), ("pending", False)]


def test_migrated_store_delivers_like_the_source(cli: Run, src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst.db"
    assert cli("migrate", str(src), str(dst))[0] == 0

    def drain(path: Path) -> list[tuple[str, str | None, str | None, int]]:
        seen = []
        with pmsq.connect(str(path)) as b:
            q = b.queue("calendar")
            while batch := q.get_many(100, timeout=0):
                for d in batch:
                    seen.append((d.message.id, d.message.tenant, d.message.key, d.message.attempt))
                    d.ack()
            # Dedup ids came along: a repeated put returns the first id, stores nothing.
            again = q.put({"n": 0}, key="property:0", tenant="acme", dedup_id="cal-0")
            assert again == seen[0][0] or any(again == s[0] for s in seen)
        return seen

    assert drain(dst) == drain(src)


def test_second_run_copies_nothing(cli: Run, src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst.db"
    assert cli("migrate", str(src), str(dst))[0] == 0
    code, out, _ = cli("migrate", str(src), str(dst))
    assert code == 0
    assert "0 message(s) copied, 37 already there" in out
    assert _snap(dst) == _snap(src)


def test_interrupted_copy_resumes_without_duplicates(src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst.db"
    pages = []

    def stop_after_three(queue: str, n: int) -> None:
        pages.append(n)
        if len(pages) == 3:
            raise KeyboardInterrupt

    with pmsq.connect(str(src)) as s, pmsq.connect(str(dst)) as d:
        with pytest.raises(KeyboardInterrupt):
            copy(BackendSource(s.backend, "src"), d.backend, batch=4, on_page=stop_after_three)
        assert d.stats().queues["calendar"].ready + d.stats().queues["calendar"].delayed == 12
        result = copy(BackendSource(s.backend, "src"), d.backend, batch=4)
    assert (result.copied, result.skipped) == (37 - 12, 12)
    assert _snap(dst) == _snap(src)


def _count(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute("SELECT count(*) FROM pmsq_messages").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0  # not created yet


def test_sigkilled_migration_rerun_has_no_duplicates(tmp_path: Path) -> None:
    src, dst = tmp_path / "big.db", tmp_path / "dst.db"
    with pmsq.connect(str(src), durability="memory") as b:
        q = b.queue("bulk")
        for chunk in range(10):
            q.put_many(
                [
                    pmsq.NewMessage({"n": chunk * 1000 + i}, key=f"k{i % 50}", tenant="t")
                    for i in range(1000)
                ]
            )
    cmd = [sys.executable, "-m", "pmsq", "migrate", str(src), str(dst), "--batch", "10"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Kill it once some pages are in (polling, not timing: any point will do).
        while proc.poll() is None and _count(dst) < 100:
            time.sleep(0.01)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    code = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert code.returncode == 0, code.stderr
    assert "verified" in code.stdout
    with pmsq.connect(str(dst)) as b:
        assert b.stats().queues["bulk"].ready + b.stats().queues["bulk"].delayed == 10_000
    assert _count(dst) == 10_000
    assert _snap(dst) == _snap(src)


def test_in_flight_messages_need_force(cli: Run, src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst.db"
    with pmsq.connect(str(src)) as b:
        d = b.queue("sms").get(timeout=1.0)  # the fallback copy, leased and kept
        code, _, err = cli("migrate", str(src), str(dst))
        assert code == 1
        assert "in flight (sms: 1)" in err
        assert "--force" in err
        assert not dst.exists()  # refused before the destination was created
        code, out, err = cli("migrate", str(src), str(dst), "--force")
        assert code == 0, err
        assert "verified" in out
        d.ack()
    with pmsq.connect(str(dst)) as b:
        with b.queue("sms").get(timeout=1.0) as again:
            assert again.message.attempt == 2  # the lost lease counted, as a lease expiry would


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("foo://x/y", "{dst}"), "unknown"),
        (("{src}", "{src}"), "the same store"),
        (("{src}", "sqlite:///{src}"), "the same store"),
        (("{src}", "persistqueue:///somewhere"), "can only be a source"),
        (("{src}", "sqlite:///:memory:"), "in-memory"),
        (("{src}", "{dst}", "--queue", "x"), "no queue 'x' to move"),
        (("{tmp}/missing.db", "{dst}"), "no store at"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    cli: Run, src: Path, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    before = _digest(src)
    dst = tmp_path / "dst.db"
    argv = [a.format(src=src, dst=dst, tmp=tmp_path) for a in args]
    code, _, err = cli("migrate", *argv)
    assert code in (1, 2)
    assert message in err, err
    assert len(err.strip().splitlines()) == 1 or code == 2
    assert _digest(src) == before


def test_conflicting_queue_options_stop_before_writing(cli: Run, src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst.db"
    with pmsq.connect(str(dst)) as b:
        b.declare_queue("email", max_attempts=9)
    code, _, err = cli("migrate", str(src), str(dst))
    assert code == 1
    assert "email (fallback, max_attempts, on_key_failure)" in err
    assert _count(dst) == 0
    with pmsq.connect(str(dst)) as b:
        assert [q.name for q in b.queues()] == ["email"]
