"""Translate sqlite3 exceptions into pmsq errors that name the file and what to do.

Errors are classified by ``sqlite_errorname`` (stable), never by message text.
"""

from __future__ import annotations

import os
import shutil
import sqlite3

from pmsq.errors import OutcomeUnknown, StorageError

__all__ = ["translate"]


def _free_space(path: str) -> str:
    try:
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(path)) or ".").free
    except OSError:
        return "free space unknown"
    return f"{free:,} bytes free"


def translate(
    exc: sqlite3.Error, path: str, *, busy_timeout: float, committing: bool = False
) -> StorageError:
    """Return the pmsq error for ``exc`` raised while using the store at ``path``.

    Args:
        exc: The sqlite3 exception.
        path: The database file.
        busy_timeout: The configured lock wait, for the message.
        committing: True if ``exc`` came from COMMIT: an I/O error there may
            still have reached the disk, so the outcome is unknown.
    """
    name = getattr(exc, "sqlite_errorname", "") or ""
    where = f"SQLite store {path!r}"
    if name.startswith("SQLITE_FULL"):
        return StorageError(
            f"disk full writing {where} ({_free_space(path)}): free space on that disk; "
            "nothing was written by this call"
        )
    if name.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN")):
        if committing and name.startswith("SQLITE_IOERR"):
            return OutcomeUnknown(
                f"I/O error ({name}) while committing to {where}: the write may or may not "
                "be stored; retry with the same dedup_id to be safe, and check the disk"
            )
        return StorageError(f"I/O error ({name}) on {where}: check the disk and its permissions")
    if name in ("SQLITE_NOTADB",):
        return StorageError(
            f"{where} is not a SQLite database (corrupt header or a foreign file): restore it "
            "from a backup (pmsq backup) or point pmsq at another file; it was left untouched"
        )
    if name.startswith("SQLITE_CORRUPT"):
        return StorageError(
            f"{where} is corrupt ({name}): run `pmsq doctor {path}` and restore from a backup; "
            "the file was left untouched"
        )
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return StorageError(
            f"{where} stayed locked longer than busy_timeout={busy_timeout}s: another process "
            "holds a long write transaction; raise busy_timeout or find that process"
        )
    if name.startswith(("SQLITE_READONLY", "SQLITE_PERM")):
        return StorageError(f"{where} is read-only ({name}): check file and folder permissions")
    return StorageError(f"{where} failed: {name or type(exc).__name__}: {exc}")
