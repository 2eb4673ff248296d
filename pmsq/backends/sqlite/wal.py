"""Sizing and checkpointing the WAL so a store that fits on its disk keeps working.

SQLite's default checkpoints the WAL once it holds 1,000 pages (4 MB) and
then reuses it from the start. Each put, claim or ack transaction appends a
dozen pages or so (the row, six indexes, the journal), so on a small volume
the WAL alone filled the disk long before the store did, and from then on
every write failed, acks included. ``WalGuard`` keeps the WAL to a quarter of
the space it may use (what is free plus what the WAL holds already), down to
``MIN_WAL_BYTES``:

- ``wal_autocheckpoint`` is set to that many pages, so SQLite checkpoints
  sooner when space is short, and ``journal_size_limit`` to that many bytes,
  so the file is cut back to it when the WAL is reused;
- when the free space drops below twice that budget, a ``TRUNCATE``
  checkpoint hands the WAL's space back to the file system at once;
- after ``SQLITE_FULL`` the backend asks ``relieve`` for a ``TRUNCATE``
  checkpoint and tries its transaction once more.

``checkpoints="external"`` switches all of this off (and SQLite's own
auto-checkpoint too) for a WAL replication tool such as Litestream that
checkpoints the WAL itself after copying it.
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Literal

from pmsq.errors import ConfigurationError

__all__ = [
    "CHECKPOINTS",
    "DEFAULT_WAL_BYTES",
    "MIN_WAL_BYTES",
    "Checkpoints",
    "WalGuard",
    "check_checkpoints",
    "is_full",
    "wal_budget",
]

Checkpoints = Literal["auto", "external"]
CHECKPOINTS: tuple[Checkpoints, ...] = ("auto", "external")

#: SQLite's own default: 1,000 pages of 4 KB.
DEFAULT_WAL_BYTES = 4096 * 1000
#: Below this the WAL would be checkpointed after nearly every transaction.
MIN_WAL_BYTES = 64 * 1024
# A statvfs and a stat per commit are cheap next to its fsync, but a group
# commit of thousands of puts a second need not ask more than this often.
_CHECK_EVERY = 0.05


def check_checkpoints(value: object) -> Checkpoints:
    """Return ``value`` if it is a valid ``checkpoints=`` option.

    Raises:
        ConfigurationError: naming the values allowed.
    """
    if value == "auto":
        return "auto"
    if value == "external":
        return "external"
    raise ConfigurationError(
        f"checkpoints must be 'auto' (pmsq sizes and checkpoints the WAL) or 'external' "
        f"(a replication tool such as Litestream checkpoints it), got {value!r}"
    )


def is_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` is SQLite's "database or disk is full"."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    return isinstance(exc, sqlite3.Error) and name.startswith("SQLITE_FULL")


def wal_budget(free: int, wal: int) -> int:
    """Bytes the WAL may grow to, given ``free`` bytes on its disk and its own size ``wal``."""
    return max(MIN_WAL_BYTES, min(DEFAULT_WAL_BYTES, (free + wal) // 4))


class WalGuard:
    """Keeps one connection's WAL sized to its disk (see the module docstring).

    Args:
        path: The store's main file (``":memory:"``: nothing to guard).
        checkpoints: ``"auto"`` or ``"external"``.
    """

    def __init__(self, path: str, checkpoints: Checkpoints = "auto") -> None:
        self.path = path
        self.checkpoints = checkpoints
        self.active = path != ":memory:" and checkpoints == "auto"
        self._folder = os.path.dirname(os.path.abspath(path))
        self._page = 4096
        self._budget = -1
        self._checked = 0.0

    def configure(self, conn: sqlite3.Connection) -> None:
        """Apply the checkpoint settings to a freshly opened connection (outside a transaction)."""
        if self.path == ":memory:":
            return
        if not self.active:
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            return
        self._page = int(conn.execute("PRAGMA page_size").fetchone()[0]) or 4096
        self._budget = -1
        self._checked = 0.0
        self.after_commit(conn)

    def _sizes(self) -> tuple[int, int]:
        st = os.statvfs(self._folder)
        try:
            wal = os.stat(self.path + "-wal").st_size
        except OSError:
            wal = 0
        return st.f_bavail * st.f_frsize, wal

    def after_commit(self, conn: sqlite3.Connection) -> None:
        """Re-size the WAL to the free space; checkpoint it at once when space is short."""
        if not self.active:
            return
        mono = time.monotonic()
        if mono - self._checked < _CHECK_EVERY:
            return
        self._checked = mono
        try:
            free, wal = self._sizes()
        except OSError:
            return
        budget = wal_budget(free, wal)
        if budget != self._budget:
            conn.execute(f"PRAGMA wal_autocheckpoint = {max(1, budget // self._page)}")
            conn.execute(f"PRAGMA journal_size_limit = {budget}")
            self._budget = budget
        if wal > MIN_WAL_BYTES and free < 2 * budget:
            self._truncate(conn)

    def relieve(self, conn: sqlite3.Connection) -> bool:
        """After ``SQLITE_FULL``: checkpoint and truncate the WAL; True if that freed space."""
        if not self.active:
            return False
        try:
            _, before = self._sizes()
        except OSError:
            return False
        self._truncate(conn)
        try:
            _, after = self._sizes()
        except OSError:
            return False
        self._checked = 0.0
        return after < before

    def _truncate(self, conn: sqlite3.Connection) -> None:
        # TRUNCATE waits (busy handler) for readers of other processes to move
        # to the newest snapshot; wait briefly, not the store's busy_timeout:
        # a checkpoint that cannot finish now is tried again after a later commit.
        timeout = conn.execute("PRAGMA busy_timeout").fetchone()[0]
        try:
            conn.execute("PRAGMA busy_timeout = 100")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error:
            pass  # best effort: the next commit tries again
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(timeout)}")
