"""``pmsq backup`` (consistent copy of a live store) and ``pmsq doctor`` (health, advice)."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import pytest

import pmsq
from pmsq.backends.sqlite.schema import SCHEMA_VERSION
from tests.cli.conftest import Run


def test_backup_copies_a_store_that_then_opens(cli: Run, store: Path, tmp_path: Path) -> None:
    dest = tmp_path / "copy.db"
    code, out, err = cli("backup", str(store), str(dest))
    assert (code, err) == (0, "")
    assert out.startswith(f"backed up {store} to {dest}:")
    assert "quick_check ok" in out
    code, out, _ = cli("stats", str(dest), "--json")
    assert code == 0
    assert '"dead": 1' in out
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".pmsq-backup")] == []


def test_backup_refuses_to_overwrite_without_force(cli: Run, store: Path, tmp_path: Path) -> None:
    dest = tmp_path / "copy.db"
    dest.write_text("precious")
    code, _, err = cli("backup", str(store), str(dest))
    assert code == 1
    assert "exists; pass --force" in err
    assert dest.read_text() == "precious"
    code, _, _ = cli("backup", str(store), str(dest), "--force")
    assert code == 0
    assert dest.read_bytes()[:16] == b"SQLite format 3\x00"


@pytest.mark.parametrize(
    ("dest", "message"),
    [("same", "DEST is the store itself"), ("dir", "is a directory"), ("nodir", "does not exist")],
)
def test_backup_destination_errors(
    cli: Run, store: Path, tmp_path: Path, dest: str, message: str
) -> None:
    target = {"same": store, "dir": tmp_path, "nodir": tmp_path / "no" / "x.db"}[dest]
    code, _, err = cli("backup", str(store), str(target))
    assert code == 1
    assert message in err


def test_backup_of_a_missing_store(cli: Run, tmp_path: Path) -> None:
    code, _, err = cli("backup", str(tmp_path / "none.db"), str(tmp_path / "b.db"))
    assert code == 1
    assert "no store at" in err
    assert not (tmp_path / "b.db").exists()


def test_backup_is_consistent_while_a_producer_writes(
    cli: Run, store: Path, tmp_path: Path
) -> None:
    stop = threading.Event()
    written: list[int] = []

    def produce() -> None:
        with pmsq.connect(str(store), durability="normal") as b:
            q = b.queue("calendar")
            n = 0
            while not stop.is_set():
                q.put_many([{"n": n + i} for i in range(20)])
                n += 20
                written.append(n)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        for i in range(3):
            while len(written) < 5 * (i + 1):  # let the producer commit more batches
                stop.wait(0.01)
            dest = tmp_path / f"live-{i}.db"
            code, _, err = cli("backup", str(store), str(dest))
            assert code == 0, err
            conn = sqlite3.connect(dest)
            try:
                assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
                ns = sorted(
                    r[0]
                    for r in conn.execute(
                        "SELECT json_extract(payload, '$.n') FROM pmsq_messages "
                        "WHERE queue = 'calendar' AND json_extract(payload, '$.n') IS NOT NULL"
                    )
                )
            finally:
                conn.close()
            # Whole transactions only: batches of 20, numbered from 0 without gaps.
            assert ns == list(range(len(ns)))
            assert len(ns) % 20 == 0
            assert ns
    finally:
        stop.set()
        producer.join()


def test_doctor_on_a_healthy_store(cli: Run, store: Path) -> None:
    code, out, _ = cli("doctor", str(store))
    assert code == 0
    lines = out.splitlines()
    assert "✓ integrity check (quick_check) passed" in lines
    assert f"✓ schema version {SCHEMA_VERSION} (this pmsq reads up to {SCHEMA_VERSION})" in lines
    assert "✓ 3 queues, 6 messages waiting or in flight" in lines
    assert "! email: 1 dead letter" in lines
    assert f"    → inspect with pmsq dlq list {store} email, fix the cause, then " in out
    # No worker runs on this store: each queue with messages due says so.
    unserved = [line for line in lines if "no live worker serves the queue" in line]
    assert len(unserved) == 3
    assert lines[-1] == "healthy, 4 warnings"


def test_doctor_on_a_missing_file(cli: Run, tmp_path: Path) -> None:
    code, out, _ = cli("doctor", str(tmp_path / "gone.db"))
    assert code == 1
    assert "✗ no store at" in out
    assert out.splitlines()[-1] == "unhealthy: 1 problem"
    assert not (tmp_path / "gone.db").exists()


def test_doctor_on_a_foreign_file_prints_the_storage_error_advice(cli: Run, tmp_path: Path) -> None:
    path = tmp_path / "photo.db"
    path.write_bytes(b"\x89PNG not a database at all" * 100)
    code, out, _ = cli("doctor", str(path))
    assert code == 1
    assert "✗ the store cannot be opened" in out
    assert "not a SQLite database" in out
    assert "restore it from a backup" in out


def test_doctor_finds_a_damaged_page(cli: Run, tmp_path: Path) -> None:
    path = tmp_path / "damaged.db"
    with pmsq.connect(str(path), durability="normal") as b:
        q = b.queue("calendar")
        for i in range(20):
            q.put_many([{"n": i, "pad": "x" * 500} for _ in range(20)])
    page = sqlite3.connect(path).execute("PRAGMA page_size").fetchone()[0]
    size = os.path.getsize(path)
    assert size > 20 * page
    with open(path, "r+b") as fh:
        # Leave the header page alone: a damaged data page is what quick_check finds.
        for at in range(page * 5, size - page, page * 3):
            fh.seek(at)
            fh.write(b"\xff" * 64)
    code, out, _ = cli("doctor", str(path))
    assert code == 1
    assert "✗" in out
    assert "restore" in out
    assert out.splitlines()[-1].startswith("unhealthy")
