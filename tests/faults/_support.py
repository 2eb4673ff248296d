"""Helpers for the fault tests: store snapshots, role processes and their event logs."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROLES = Path(__file__).resolve().parents[1] / "roles"


# -- "the store is unchanged" ------------------------------------------------------------
def checkpoint(path: Path) -> None:
    """Move every committed WAL frame into the main file and truncate the WAL to 0 bytes.

    Fails the test if some connection's read transaction keeps the checkpoint
    from completing: a partial checkpoint would make byte comparisons meaningless.
    """
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.close()
    assert busy == 0, f"could not checkpoint {path}: a reader or writer holds it"


def logical_dump(path: Path) -> list[str]:
    """Every table's schema and rows, as SQL text (read-only: it writes nothing)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def file_digest(path: Path) -> str | None:
    """SHA-256 of a file's bytes, or None if it does not exist."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


class StoreSnapshot:
    """What "the store is unchanged" means here, for a WAL-mode file.

    Taken after a TRUNCATE checkpoint: the main file holds everything and the
    WAL is empty. Any transaction committed afterwards appends frames to the
    WAL (so the WAL's bytes change), and after the next checkpoint its pages
    change the main file's bytes; the logical dump catches any row or schema
    change even if page layout happened to come out identical. A rolled-back
    transaction leaves all three as they were.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        checkpoint(path)
        self.wal = file_digest(self._wal_path())
        self.main = file_digest(path)
        self.dump = logical_dump(path)

    def _wal_path(self) -> Path:
        return self.path.with_name(self.path.name + "-wal")

    def assert_unchanged(self) -> None:
        """Fail if anything was committed since the snapshot."""
        assert file_digest(self._wal_path()) == self.wal, "a transaction was committed (WAL grew)"
        checkpoint(self.path)
        assert logical_dump(self.path) == self.dump, "the store's rows or schema changed"
        assert file_digest(self.path) == self.main, "the store's file bytes changed"


def table_rows(path: Path, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Read rows with a plain read-only sqlite3 connection (bypassing pmsq)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [tuple(r) for r in conn.execute(sql, args).fetchall()]
    finally:
        conn.close()


def integrity(path: Path) -> list[str]:
    """``PRAGMA integrity_check`` rows (``["ok"]`` when healthy)."""
    return [str(r[0]) for r in table_rows(path, "PRAGMA integrity_check")]


# -- role processes ------------------------------------------------------------------------
def start_role(script: str, *args: str | os.PathLike[str], log: Path | None = None) -> Any:
    """Start ``tests/roles/<script>`` as a real process; stderr goes to ``log`` if given."""
    err: Any = subprocess.DEVNULL if log is None else log.open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, str(ROLES / script), *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    finally:
        if log is not None:
            err.close()


def kill9(proc: Any) -> None:
    """SIGKILL one process we started, by its PID, and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@contextlib.contextmanager
def reaping(procs: list[Any]) -> Iterator[list[Any]]:
    """Yield ``procs`` (a list the body may extend); SIGKILL any still running at the end."""
    try:
        yield procs
    finally:
        for p in procs:
            kill9(p)
            for stream in (p.stdin, p.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()


def stderr_of(log: Path) -> str:
    return log.read_text(errors="replace") if log.exists() else ""


# -- event logs ---------------------------------------------------------------------------------
def read_events(directory: Path, pattern: str = "*.events") -> list[dict[str, Any]]:
    """All JSON events of every log file in ``directory``; a torn last line is skipped.

    A process killed while writing can leave a last line without its newline;
    it never reached the log, as far as the checks are concerned.
    """
    events: list[dict[str, Any]] = []
    for path in sorted(directory.glob(pattern)):
        text = path.read_text()
        lines = text.split("\n")
        for line in lines[:-1]:  # the part after the last newline is torn or empty
            if line:
                events.append(json.loads(line))
    return events


def wait_ready(procs: Sequence[Any]) -> None:
    """Block until each role process printed its ``ready`` line (the test timeout bounds it)."""
    for p in procs:
        line = p.stdout.readline()
        assert line == b"ready\n", f"role process {p.pid} did not start: {line!r}"


def by_id(events: Sequence[dict[str, Any]], ev: str) -> dict[str, list[dict[str, Any]]]:
    """Events of kind ``ev`` grouped by message id, each group in time order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for e in sorted((e for e in events if e["ev"] == ev), key=lambda e: e["t"]):
        out.setdefault(e["id"], []).append(e)
    return out


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A real, small file system (a tmpfs of ``size``, e.g. ``"4m"``) mounted at ``where``.

    It needs root and mount(8); without them the test skips, except in CI
    (``CI=true``), where a fault test that cannot run must fail, not vanish.
    """
    import shutil

    import pytest

    def unavailable(why: str) -> None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"this disk-fault test must run in CI: {why}")
        pytest.skip(why)

    if os.geteuid() != 0 or shutil.which("mount") is None:
        unavailable("needs root and mount(8) to make a small tmpfs")
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        unavailable(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=False)
