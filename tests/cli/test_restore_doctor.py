"""``pmsq restore``, rolling ``pmsq backup``, and doctor's checks on the store's files."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import pmsq
from pmsq.cli import doctor
from tests.cli.conftest import Run

_HOLDER = """
import sys, pmsq
b = pmsq.connect(sys.argv[1])
b.queue("calendar").put({"n": "holder"})
print("open", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def holder(store: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process with the store open (until the test ends)."""
    with subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(store)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "open"
        try:
            yield proc
        finally:
            proc.kill()
            proc.wait()


def _backup(cli: Run, store: Path, dest: Path) -> None:
    code, _, err = cli("backup", str(store), str(dest))
    assert code == 0, err


def test_restore_lists_what_was_in_flight_and_delivers_it_at_once(
    cli: Run, store: Path, tmp_path: Path
) -> None:
    with pmsq.connect(str(store)) as b:
        d = b.queue("calendar").get(timeout=1)  # leased, never settled
        leased = d.message.id
    dest = tmp_path / "backup.db"
    _backup(cli, store, dest)
    target = tmp_path / "restored" / "pms.db"
    target.parent.mkdir()
    code, out, err = cli("restore", str(dest), str(target))
    assert (code, err) == (0, "")
    assert f"restored {dest} to {target}: 7 messages, quick_check ok" in out
    assert "1 message in flight at the backup will be delivered again:" in out
    assert f"  calendar {leased} key=property:1 tenant=acme (attempt 1)" in out
    with pmsq.connect(str(target)) as b:
        # Its lease was cut: no waiting for it to lapse.
        again = {d.message.id: d for d in b.queue("calendar").get_many(10, timeout=0)}
        assert leased in again
        assert again[leased].message.attempt == 2
        assert b.stats().queues["email"].dead == 1


def test_restore_refuses_an_existing_store_without_force_and_keeps_it_with(
    cli: Run, store: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "backup.db"
    _backup(cli, store, dest)
    with pmsq.connect(str(store)) as b:
        b.queue("calendar").put({"after": "backup"})
    code, _, err = cli("restore", str(dest), str(store))
    assert code == 1
    assert f"{store} exists and holds 8 messages; pass --force" in err
    code, out, err = cli("restore", str(dest), str(store), "--force")
    assert (code, err) == (0, ""), err
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("pms.db.replaced-")]
    kept = [p for p in kept if not p.name.endswith(("-wal", "-shm"))]
    assert len(kept) == 1
    assert f"is kept as {kept[0]}" in out
    with pmsq.connect(str(kept[0])) as b:
        assert b.stats().queues["calendar"].depth == 4  # the put after the backup is kept
    with pmsq.connect(str(store)) as b:
        assert b.stats().queues["calendar"].depth == 3


def test_restore_refuses_a_store_another_process_has_open(
    cli: Run, store: Path, tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    dest = tmp_path / "backup.db"
    _backup(cli, store, dest)
    before = store.read_bytes()
    code, _, err = cli("restore", str(dest), str(store), "--force")
    assert code == 1
    assert f"is in use by process(es) {holder.pid}" in err
    assert store.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if ".replaced-" in p.name or ".pmsq-" in p.name]


def test_restore_refuses_a_damaged_backup(cli: Run, store: Path, tmp_path: Path) -> None:
    dest = tmp_path / "backup.db"
    _backup(cli, store, dest)
    page = 4096
    with open(dest, "r+b") as fh:
        for at in range(page * 2, os.path.getsize(dest) - page, page):
            fh.seek(at)
            fh.write(b"\xff" * 64)
    target = tmp_path / "new.db"
    code, _, err = cli("restore", str(dest), str(target))
    assert code == 1
    assert "integrity check" in err or "corrupt" in err
    assert not target.exists()


def test_doctor_finds_sidecars_deleted_under_a_live_process(
    cli: Run, store: Path, holder: subprocess.Popen[str]
) -> None:
    os.remove(f"{store}-wal")
    os.remove(f"{store}-shm")
    code, out, _ = cli("doctor", str(store))
    assert code == 1
    assert f"deleted or replaced while process(es) {holder.pid}" in out
    assert "split brain" in out
    # The doctor did not open the store: that would have started a second WAL.
    assert not os.path.exists(f"{store}-wal")


def test_doctor_is_quiet_about_a_live_store_left_alone(
    cli: Run, store: Path, holder: subprocess.Popen[str]
) -> None:
    code, out, _ = cli("doctor", str(store))
    assert code == 0, out
    assert "split brain" not in out


def test_doctor_warns_about_a_network_file_system(store: Path, tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/sda1 / ext4 rw,relatime 0 0\n"
        f"server:/export {str(store.parent).replace(' ', chr(92) + '040')} nfs4 rw 0 0\n"
    )
    findings = doctor.examine(str(store), mounts=str(mounts))
    assert [f.text for f in findings if "network file system" in f.text] == [
        "the store is on a network file system (nfs4)"
    ]
    local = tmp_path / "local-mounts"
    local.write_text("/dev/sda1 / ext4 rw,relatime 0 0\n")
    assert not [f for f in doctor.examine(str(store), mounts=str(local)) if "network" in f.text]


def test_doctor_says_when_the_disk_is_too_small_for_the_store(
    cli: Run, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = os.path.getsize(store)
    monkeypatch.setattr(doctor, "_free_bytes", lambda path: size // 2)
    code, out, _ = cli("doctor", str(store))
    assert code == 1  # under 256 KB free: writes may fail already
    assert f"the disk is too small for the store: {size // 2:,} bytes free" in out
    monkeypatch.setattr(doctor, "_free_bytes", lambda path: size + 300_000)
    code, out, _ = cli("doctor", str(store))
    assert "too small" not in out
    assert "bytes free on the store's disk" in out  # the general low-space warning


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_rolling_backups_are_verified_pruned_and_stop_on_a_signal(
    store: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    folder = tmp_path / "backups"
    folder.mkdir()
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pmsq",
            "backup",
            str(store),
            str(folder),
            "--every",
            "0.05",
            "--keep",
            "3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        lines = []
        while sum(line.startswith("backed up") for line in lines) < 6:
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            lines.append(line)
        proc.send_signal(sig)
        rest, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (0, "")
    assert rest.splitlines()[-1].startswith("stopped after ")
    assert any(line.startswith("pruned ") for line in lines)
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == 3, names  # no half-written file, no hidden temporary
    for name in names:
        assert name.startswith("pms-")
        assert name.endswith("Z.db")
        conn = sqlite3.connect(folder / name)
        try:
            assert conn.execute("SELECT count(*) FROM pmsq_messages").fetchone()[0] == 7
        finally:
            conn.close()


def test_one_rolling_backup_for_cron(cli: Run, store: Path, tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    folder.mkdir()
    for _ in range(3):
        code, out, err = cli("backup", str(store), str(folder), "--keep", "2")
        assert (code, err) == (0, "")
        assert out.startswith("backed up")
    assert len(list(folder.iterdir())) == 2
