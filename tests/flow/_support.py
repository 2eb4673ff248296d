"""Helpers for the flow tests: role processes, raw store reads, the rate-window checker."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROLES = Path(__file__).resolve().parents[1] / "roles_flow"


class Role:
    """A role script run as a real process; its stdout lines are read by a thread."""

    def __init__(self, script: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ROLES / script), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def expect(self, prefix: str, timeout: float = 60.0) -> str:
        """The next stdout line starting with ``prefix``; fails with stderr if none comes."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                line = self.lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            if line.startswith(prefix):
                return line
        raise AssertionError(
            f"role never printed {prefix!r} (exit code {self.proc.poll()}); "
            f"stderr:\n{self.stderr()}"
        )

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "(still running)"
        return self.proc.stderr.read()

    def kill(self) -> None:
        """SIGKILL this process (by its PID) and reap it."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def wait(self, timeout: float = 60.0) -> int:
        return self.proc.wait(timeout=timeout)


@contextlib.contextmanager
def roles(*specs: Sequence[str]) -> Iterator[list[Role]]:
    """Start role processes; whatever happens, kill the ones still running (by PID)."""
    started: list[Role] = []
    try:
        for spec in specs:
            started.append(Role(spec[0], *spec[1:]))
        yield started
    finally:
        for role in started:
            role.kill()
            for stream in (role.proc.stdout, role.proc.stderr):
                if stream is not None:
                    stream.close()


def raw_rows(db: Path | str, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Read the store with a plain connection of our own (what is committed, nothing else)."""
    conn = sqlite3.connect(str(db), timeout=10)
    try:
        return [tuple(r) for r in conn.execute(sql, args).fetchall()]
    finally:
        conn.close()


def window_violation(
    claims: Sequence[tuple[float, float]], limit: int, per: float
) -> list[tuple[float, float]] | None:
    """A set of ``limit + 1`` claims that certainly fell within one window of ``per`` seconds.

    Each claim is known only as an interval ``(before, after)`` of clock
    readings taken around the call that made it: its true claim time lies
    somewhere inside. Claims whose intervals all lie inside ``[b, b + per)``
    certainly happened within one window, whatever their exact times; a set
    of ``limit + 1`` such claims proves the limit was broken. Taking ``b`` as
    the smallest ``before`` of any violating set shows this search finds one
    if one exists, and it never accuses a correct limiter (sound, not flaky).

    Returns:
        The offending claims, or ``None``.
    """
    ordered = sorted(claims)
    for i, (start, _) in enumerate(ordered):
        inside = [c for c in ordered[i:] if c[1] < start + per]
        if len(inside) > limit:
            return inside[: limit + 1]
    return None
