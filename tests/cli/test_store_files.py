"""The store's files under the CLI: odd path names, stale sidecars, verified backups."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import pmsq
from pmsq.backends.sqlite import files
from tests.cli.conftest import Run


def _store(path: Path, n: int, queue: str = "calendar") -> None:
    with pmsq.connect(str(path), durability="normal") as b:
        b.queue(queue).put_many([{"n": i} for i in range(n)])


def _payloads(path: Path) -> list[int]:
    conn = sqlite3.connect(files.readonly_uri(str(path)), uri=True)
    try:
        return [
            r[0]
            for r in conn.execute(
                "SELECT json_extract(payload, '$.n') FROM pmsq_messages ORDER BY seq"
            )
        ]
    finally:
        conn.close()


ODD_NAMES = ["a#b.db", "what?.db", "a%41.db", "with space.db", "réservations ü.db", "x?mode=rw#.db"]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_commands_read_a_store_whose_path_holds_uri_syntax(
    cli: Run, tmp_path: Path, name: str
) -> None:
    folder = tmp_path / "odd dir #1?"
    folder.mkdir()
    path = folder / name
    _store(path, 4)
    before = sorted(os.listdir(folder))
    code, out, err = cli("stats", str(path), "--json")
    assert (code, err) == (0, "")
    assert '"ready": 4' in out
    code, out, _ = cli("doctor", str(path))
    assert code == 0, out
    dest = tmp_path / f"copy of {name}"
    code, out, err = cli("backup", str(path), str(dest))
    assert (code, err) == (0, ""), err
    assert "4 messages" in out
    assert _payloads(dest) == [0, 1, 2, 3]
    # Nothing appeared where an unquoted URI would have cut the path short.
    assert sorted(p for p in os.listdir(folder) if not p.startswith(name)) == sorted(
        p for p in before if not p.startswith(name)
    )
    assert sorted(os.listdir(tmp_path)) == sorted(["odd dir #1?", f"copy of {name}"])


def test_percent_escapes_in_a_path_are_not_decoded(cli: Run, tmp_path: Path) -> None:
    # Unquoted, file:.../a%41.db is a URI for .../aA.db: backup copied the wrong store.
    _store(tmp_path / "a%41.db", 3)
    _store(tmp_path / "aA.db", 7)
    dest = tmp_path / "copy.db"
    code, out, err = cli("backup", str(tmp_path / "a%41.db"), str(dest))
    assert (code, err) == (0, "")
    assert "3 messages" in out
    assert _payloads(dest) == [0, 1, 2]


def test_a_relative_path_starting_with_file_colon_is_a_file_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pmsq.connect("file:odd.db", durability="normal") as b:
        b.queue("q").put({"n": 1})
    assert (tmp_path / "file:odd.db").exists()
    assert not (tmp_path / "odd.db").exists()


def test_uri_round_trips_through_sqlite(tmp_path: Path) -> None:
    for name in ODD_NAMES:
        path = tmp_path / name
        conn = sqlite3.connect(files.uri(str(path)), uri=True)
        conn.execute("CREATE TABLE t (x)")
        conn.close()
        assert path.exists(), name
        ro = sqlite3.connect(files.readonly_uri(str(path)), uri=True)
        try:
            assert ro.execute("SELECT name FROM sqlite_master").fetchall() == [("t",)]
        finally:
            ro.close()


_WRITER = """
import sys, pmsq
b = pmsq.connect(sys.argv[1])
b.queue("calendar").put_many([{"n": 100 + i} for i in range(5)])
print("written", flush=True)
sys.stdin.read()
"""


def _killed_writer(path: Path) -> None:
    """Open ``path`` in another process, commit to its WAL, and SIGKILL it there."""
    with subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "written"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


def test_backup_force_over_a_copy_with_a_stale_wal(cli: Run, tmp_path: Path) -> None:
    store = tmp_path / "pms.db"
    _store(store, 3)
    dest = tmp_path / "copy.db"
    code, _, _ = cli("backup", str(store), str(dest))
    assert code == 0
    _killed_writer(dest)  # someone opened the old copy; its -wal stays behind
    assert os.path.getsize(f"{dest}-wal") > 0
    assert sorted(_payloads(dest)) == [0, 1, 2, 100, 101, 102, 103, 104]

    _store(store, 2)  # the store moves on: 5 messages now
    code, out, err = cli("backup", str(store), str(dest), "--force")
    assert (code, err) == (0, "")
    assert "5 messages" in out
    # The copy reads as the store, not as the old copy replayed from its WAL.
    assert _payloads(dest) == [0, 1, 2, 0, 1]
    with pmsq.connect(str(dest)) as b:
        assert b.stats().queues["calendar"].ready == 5


def test_a_copy_that_differs_from_the_source_is_refused(
    cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pmsq.cli import backup as backup_cli

    store = tmp_path / "pms.db"
    _store(store, 3)
    real = backup_cli.fingerprint
    calls: list[int] = []

    def lying(conn: sqlite3.Connection) -> backup_cli.Snapshot:
        calls.append(1)
        snap = real(conn)
        # The second look is the copy: pretend a page of it went astray.
        return snap if len(calls) == 1 else backup_cli.Snapshot(snap.messages - 1, 0, "x")

    monkeypatch.setattr(backup_cli, "fingerprint", lying)
    dest = tmp_path / "copy.db"
    code, _, err = cli("backup", str(store), str(dest))
    assert code == 1
    assert "the copy differs from the store" in err
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".pmsq-backup")] == []
