"""The files of a SQLite store on disk: URIs, the ``-wal``/``-shm`` sidecars, who has them open.

A store is the main file plus, in WAL mode, ``PATH-wal`` (committed pages
not yet checkpointed) and ``PATH-shm`` (the WAL index every connection maps).
Those sidecars are part of the store: a ``-wal`` left beside a file that was
replaced is replayed over the new file, and a ``-wal`` deleted under a live
process splits the store in two. Everything here only reads, except
``remove_sidecars``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "NETWORK_FS",
    "SIDECARS",
    "detached_sidecars",
    "file_system_type",
    "holders",
    "in_use",
    "readonly_uri",
    "remove_sidecars",
    "uri",
]

#: The files SQLite keeps beside a database, by suffix.
SIDECARS = ("-wal", "-shm", "-journal")

#: File system types on which SQLite's locks and shared memory are not to be trusted.
NETWORK_FS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "9p",
        "afs",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "fuse.sshfs",
        "fuse.glusterfs",
        "fuse.s3fs",
        "fuse.rclone",
        "fuse.gcsfuse",
        "davfs",
        "fuse.davfs2",
    }
)

# The unix VFS locks byte 128 of the -shm file (its "dead man switch") shared
# for as long as a connection has the WAL index mapped, i.e. has the store open.
_SHM_DMS_BYTE = 128


def uri(path: str, **params: str) -> str:
    """A ``file:`` URI for ``path`` that SQLite reads back as exactly that path.

    ``#``, ``?`` and ``%`` are URI syntax: pasted unquoted into ``file:{path}``
    they cut the path short or decode to another file. The path is made
    absolute and percent-encoded.

    Args:
        path: The database file, relative or absolute.
        **params: Query parameters (``mode="ro"``).

    Returns:
        The URI, for ``sqlite3.connect(..., uri=True)``.
    """
    text = Path(os.path.abspath(path)).as_uri()
    if params:
        text += "?" + "&".join(f"{k}={v}" for k, v in params.items())
    return text


def readonly_uri(path: str) -> str:
    """The read-only URI (``mode=ro``) of the store at ``path``: opening it never creates a file."""
    return uri(path, mode="ro")


def remove_sidecars(path: str) -> list[str]:
    """Delete ``path``'s ``-wal``, ``-shm`` and ``-journal`` files; return those removed.

    Only for a file no process has open (check with ``in_use``): under a live
    connection this is exactly the split-brain hazard ``detached_sidecars``
    reports.

    Raises:
        OSError: a sidecar exists but cannot be removed.
    """
    removed = []
    for suffix in SIDECARS:
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            continue
        removed.append(path + suffix)
    return removed


def in_use(path: str) -> bool:
    """Whether another process has the WAL-mode store at ``path`` open right now.

    Asks the kernel (``F_GETLK``, which takes no lock) whether some process
    holds a lock on the ``-shm`` file's dead-man-switch byte, which every open
    connection keeps. Locks of the calling process itself are not seen (POSIX
    locks are per process), and a store without a ``-shm`` file is not open
    in WAL mode anywhere.
    """
    shm = path + "-shm"
    try:
        fd = os.open(shm, os.O_RDONLY)
    except OSError:
        return False
    try:
        # struct flock: l_type, l_whence, l_start, l_len, l_pid (Linux x86-64/arm64 layout).
        query = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, _SHM_DMS_BYTE, 1, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
    except OSError:
        return False
    finally:
        os.close(fd)
    lock_type: int = struct.unpack("hhqqi", answer)[0]
    return lock_type != fcntl.F_UNLCK


def _open_fds(proc: str) -> Iterator[tuple[int, str, os.stat_result]]:
    """(pid, link text, stat of the open file) for every open file of every process."""
    with contextlib.suppress(OSError):
        entries = os.listdir(proc)
        for pid in entries:
            if not pid.isdigit():
                continue
            fd_dir = os.path.join(proc, pid, "fd")
            try:
                fds = os.listdir(fd_dir)
            except OSError:
                continue  # gone, or not ours to read
            for fd in fds:
                link = os.path.join(fd_dir, fd)
                try:
                    text = os.readlink(link)
                    st = os.stat(link)
                except OSError:
                    continue
                yield int(pid), text, st


def holders(path: str, *, proc: str = "/proc") -> list[int]:
    """The ids of the processes (this one included) that have the store at ``path`` open."""
    real = os.path.realpath(path)
    names = {real, real + "-wal", real + "-shm"}
    return sorted({pid for pid, text, _ in _open_fds(proc) if text in names})


def detached_sidecars(path: str, *, proc: str = "/proc") -> list[tuple[int, str]]:
    """Processes writing a ``-wal``/``-shm`` of ``path`` that is no longer the file on disk.

    When a live store's ``-wal``/``-shm`` are deleted (or replaced), its
    processes go on writing to the deleted files while any new connection
    starts a fresh WAL: two stores under one name, and commits of one side
    are lost for the other. This finds them by comparing what each process
    has open with what the directory holds now.

    Args:
        path: The store's main file.
        proc: The proc file system to read (a test may point it elsewhere).

    Returns:
        ``(pid, sidecar)`` pairs; empty when all is well or ``/proc`` is unreadable.
    """
    real = os.path.realpath(path)
    found: list[tuple[int, str]] = []
    for pid, text, st in _open_fds(proc):
        for suffix in ("-wal", "-shm"):
            name = real + suffix
            if text != name and text != name + " (deleted)":
                continue
            try:
                now = os.stat(name)
            except OSError:
                found.append((pid, name))
                continue
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                found.append((pid, name))
    return sorted(set(found))


def file_system_type(path: str, *, mounts: str = "/proc/mounts") -> str | None:
    """The type of the file system ``path`` lives on (``ext4``, ``nfs4``...), from ``mounts``.

    Returns:
        The type of the longest mount point containing ``path``; ``None`` if unknown.
    """
    real = os.path.realpath(path)
    best: tuple[int, str] | None = None
    try:
        with open(mounts, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        # /proc/mounts escapes space, tab, newline and backslash as octal.
        point = (
            parts[1]
            .replace("\\040", " ")
            .replace("\\011", "\t")
            .replace("\\012", "\n")
            .replace("\\134", "\\")
        )
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= best[0]):
            best = (len(point), parts[2])
    return None if best is None else best[1]
