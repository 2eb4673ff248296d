"""Checks on a SQLite store's path made before SQLite opens it.

SQLite creates a missing file but not its folder, and reports a missing
folder as ``SQLITE_CANTOPEN``, which reads like a disk or permission fault.
The usual cause is the URL itself: ``sqlite:///var/lib/pms/pms.db`` (three
slashes) is the relative path ``var/lib/pms/pms.db``; the absolute path
needs four, ``sqlite:////var/lib/pms/pms.db``.
"""

from __future__ import annotations

import os

from pmsq.errors import StorageError

__all__ = ["check_folder"]


def check_folder(path: str, url: str) -> None:
    """Make sure the folder that will hold the store file exists.

    Args:
        path: The file path parsed from ``url``.
        url: The URL or path the caller gave, for the message.

    Raises:
        StorageError: the folder does not exist; for a relative ``sqlite:///``
            URL the message says how to write the absolute path.
    """
    if path == ":memory:":
        return
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(folder):
        return
    message = (
        f"cannot open the SQLite store {path!r}: the folder {folder} does not exist "
        "(pmsq creates the store file, not its folders)"
    )
    if url.lower().startswith("sqlite:///") and not os.path.isabs(path):
        message += (
            f"; {url} is a path relative to the working directory {os.getcwd()}: "
            "three slashes begin a relative path, four an absolute one "
            f"(sqlite:////{path})"
        )
    raise StorageError(message)
