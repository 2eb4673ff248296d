"""``pmsq backup URL DEST``: a consistent, verified copy of a live SQLite store.

``pmsq backup URL DIR --every S --keep N`` keeps rolling backups in ``DIR``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import signal
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

import attrs

from pmsq.backends.sqlite.files import readonly_uri, remove_sidecars
from pmsq.cli._common import CommandError, positive_seconds, probe_sqlite, sqlite_path
from pmsq.errors import PmsqError

__all__ = ["Snapshot", "backup", "fingerprint", "prune", "rolling_name", "run"]

EXAMPLES = """\
Uses SQLite's online backup API: the copy is one consistent instant of the
store even while workers put, claim and ack (writers are not blocked). The
copy is written to a hidden temporary file beside DEST, checked (quick_check,
and every message compared with the source's snapshot), then renamed, so
DEST is never left half-written; it is opened and compared once more under
its final name.

Rolling backups: give a folder and --every (and/or --keep). Each backup is
named STORE-YYYYmmddTHHMMSS.fffZ.db, verified the same way, and the oldest
beyond --keep are deleted. SIGINT or SIGTERM stop the loop after the backup
in progress (a half-written one never carries a final name).

To restore: pmsq restore BACKUP URL (see docs/disaster-recovery.md).

examples:
  pmsq backup /var/lib/pms/pms.db /backups/pms-$(date +%F).db
  pmsq backup sqlite:///pms.db pms-copy.db --force     # overwrite an old copy
  pmsq backup /var/lib/pms/pms.db /backups/ --every 300 --keep 48
  pmsq backup /var/lib/pms/pms.db /backups/ --keep 48  # one, for cron
"""

#: Default number of rolling backups kept when only --every is given.
DEFAULT_KEEP = 24


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {text!r}")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``backup`` subcommand."""
    p = sub.add_parser(
        "backup",
        help="copy a live SQLite store consistently (online backup API), once or rolling",
        description="Copy a SQLite store to DEST while it is in use, then check the copy.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("url", metavar="URL", help="store URL (sqlite:///pms.db) or a plain path")
    p.add_argument(
        "dest",
        metavar="DEST",
        help="file to write (refused if it exists), or the folder of rolling backups",
    )
    p.add_argument("--force", action="store_true", help="replace DEST if it exists")
    p.add_argument(
        "--every",
        type=positive_seconds,
        metavar="S",
        help="rolling: take a backup into the folder DEST every S seconds until stopped",
    )
    p.add_argument(
        "--keep",
        type=_count,
        metavar="N",
        help=f"rolling: keep the newest N backups in DEST (default {DEFAULT_KEEP})",
    )
    p.set_defaults(func=run)


@attrs.frozen
class Snapshot:
    """What a store holds at one instant: enough to tell two stores apart.

    Attributes:
        messages: Rows in ``pmsq_messages`` (waiting, in flight and dead).
        in_flight: Of those, leased to a consumer at that instant.
        digest: SHA-256 over every message's identity, state and payload checksum.
    """

    messages: int
    in_flight: int
    digest: str


def fingerprint(conn: sqlite3.Connection) -> Snapshot:
    """The ``Snapshot`` of the store ``conn`` reads (inside its current read transaction)."""
    h = hashlib.sha256()
    messages = in_flight = 0
    rows = conn.execute(
        "SELECT seq, id, queue, state, attempt, lease_token, crc FROM pmsq_messages ORDER BY seq"
    )
    for row in rows:
        messages += 1
        in_flight += row[3] == 1
        h.update(repr(tuple(row)).encode())
    return Snapshot(messages, in_flight, h.hexdigest())


def _check_copy(conn: sqlite3.Connection, source: str) -> None:
    problems = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
    if problems != ["ok"]:
        raise CommandError(
            f"the copy failed its integrity check ({'; '.join(problems[:3])}); "
            f"run pmsq doctor {source}"
        )


def copy_store(src_path: str, tmp: str) -> Snapshot:
    """Copy the store at ``src_path`` into the new file ``tmp``; return the source's snapshot.

    The fingerprint and the copy are taken in one read transaction of the
    source, so they describe the same instant; the copy is then checked
    against it.

    Raises:
        CommandError: the copy failed its integrity check or differs from the source.
        sqlite3.Error: SQLite refused (translated by the caller).
    """
    src = sqlite3.connect(readonly_uri(src_path), uri=True, timeout=30.0, isolation_level=None)
    try:
        src.execute("BEGIN")
        seen = fingerprint(src)  # starts the read transaction the backup reuses
        dst = sqlite3.connect(tmp)
        try:
            # pages=-1: one step inside the open read transaction, so the copy is
            # the instant fingerprinted above; WAL lets writers go on meanwhile.
            src.backup(dst, pages=-1)
            # A rollback-journal file: reading it (the checks below, a restore)
            # leaves no -wal/-shm beside it; pmsq switches it back to WAL when
            # it opens it as a store.
            dst.execute("PRAGMA journal_mode = DELETE")
        finally:
            dst.close()
        src.execute("COMMIT")
    finally:
        src.close()
    copied = verify(tmp, source=src_path)
    if copied != seen:
        raise CommandError(
            f"the copy differs from the store ({copied.messages:,} messages copied, "
            f"{seen.messages:,} in the store); nothing was replaced"
        )
    return seen


def verify(path: str, *, source: str) -> Snapshot:
    """Open the backup at ``path`` read-only, check its integrity, return its snapshot.

    Raises:
        CommandError: it fails ``quick_check``.
        sqlite3.Error: it cannot be read.
    """
    conn = sqlite3.connect(readonly_uri(path), uri=True, isolation_level=None)
    try:
        _check_copy(conn, source)
        return fingerprint(conn)
    finally:
        conn.close()


@contextlib.contextmanager
def _temporary(folder: str) -> Iterator[str]:
    """A hidden temporary file in ``folder``, removed (with sidecars) unless renamed away."""
    fd, tmp = tempfile.mkstemp(prefix=".pmsq-backup-", suffix=".db", dir=folder)
    os.close(fd)
    try:
        yield tmp
    finally:
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(OSError):
                os.remove(tmp + suffix)


def _fsync_dir(folder: str) -> None:
    # The rename is durable only once the folder's entry is on disk.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def backup(src_path: str, dest: str) -> Snapshot:
    """Copy ``src_path`` to ``dest`` atomically and verify it; return what the copy holds.

    A ``-wal``/``-shm``/``-journal`` left beside an old ``dest`` (by a process
    killed while it had that file open) would be replayed over the new copy
    the first time it is opened, so they are removed before the rename, and
    the file under its final name is opened and compared once more.

    Raises:
        CommandError: the copy failed its checks, or differs from the source.
        sqlite3.Error: SQLite refused (translated by the caller).
        OSError: the file system refused.
    """
    folder = os.path.dirname(os.path.abspath(dest))
    with _temporary(folder) as tmp:
        seen = copy_store(src_path, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        remove_sidecars(dest)
        os.replace(tmp, dest)
    _fsync_dir(folder)
    final = verify(dest, source=src_path)
    if final != seen:
        raise CommandError(
            f"{dest} does not read back as the copy just written ({final.messages:,} messages "
            f"instead of {seen.messages:,}): is another process using that file? "
            "Delete it and back up again"
        )
    return seen


_STAMP = "%Y%m%dT%H%M%S"


def rolling_name(store: str, when: float) -> str:
    """The file name of a rolling backup of ``store`` taken at epoch ``when`` (sortable, UTC)."""
    stem = os.path.splitext(os.path.basename(store))[0] or "store"
    millis = int(when * 1000) % 1000
    return f"{stem}-{time.strftime(_STAMP, time.gmtime(when))}.{millis:03d}Z.db"


def _rolling_pattern(store: str) -> re.Pattern[str]:
    stem = os.path.splitext(os.path.basename(store))[0] or "store"
    return re.compile(rf"{re.escape(stem)}-\d{{8}}T\d{{6}}\.\d{{3}}Z\.db")


def rolling_backups(store: str, folder: str) -> list[str]:
    """The rolling backups of ``store`` in ``folder``, oldest first (full paths)."""
    pattern = _rolling_pattern(store)
    names = sorted(n for n in os.listdir(folder) if pattern.fullmatch(n))
    return [os.path.join(folder, n) for n in names]


def prune(store: str, folder: str, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` rolling backups of ``store``; return those deleted."""
    old = rolling_backups(store, folder)[:-keep]
    for path in old:
        os.remove(path)
        remove_sidecars(path)
    return old


def _report(path: str, dest: str, snap: Snapshot) -> str:
    size = os.path.getsize(dest)
    return (
        f"backed up {path} to {dest}: {size:,} bytes, {snap.messages:,} messages "
        f"({snap.in_flight:,} in flight), quick_check ok, verified"
    )


def _one(path: str, dest: str) -> Snapshot:
    try:
        return backup(path, dest)
    except sqlite3.Error as exc:
        from pmsq.backends.sqlite.errors import translate

        raise translate(exc, path, busy_timeout=30.0) from exc
    except OSError as exc:
        raise CommandError(f"cannot write {dest}: {exc.strerror or exc}") from exc


def roll(
    path: str,
    folder: str,
    *,
    every: float | None,
    keep: int,
    stop: threading.Event,
    say: Callable[[str], None] = lambda line: print(line, flush=True),
) -> int:
    """Take rolling backups of ``path`` into ``folder`` until ``stop`` is set; return how many.

    With ``every=None`` one backup is taken. A failed backup is reported and
    the loop goes on (the next may succeed once the disk has room); old
    backups are pruned only after a new one was verified.

    Raises:
        PmsqError: a single (``every=None``) backup failed.
    """
    taken = 0
    while True:
        dest = os.path.join(folder, rolling_name(path, time.time()))
        try:
            snap = _one(path, dest)
        except PmsqError as exc:
            if every is None:
                raise
            say(f"backup failed, next try in {every:g}s: {exc}")
        else:
            taken += 1
            say(_report(path, dest, snap))
            for gone in prune(path, folder, keep):
                say(f"pruned {gone}")
        if every is None or stop.wait(every):
            return taken


def run(args: argparse.Namespace) -> int:
    """Back up and report."""
    path = sqlite_path(args.url)
    if path is None:
        raise CommandError(
            "pmsq backup copies SQLite stores; back up a server store with its own tools "
            "(pg_dump, RabbitMQ definitions export)"
        )
    probe_sqlite(path)
    dest = args.dest
    if args.every is not None or args.keep is not None:
        return _run_rolling(args, path)
    if os.path.isdir(dest):
        raise CommandError(
            f"{dest} is a directory; give the backup's file name (or --every/--keep for "
            "rolling backups in that folder)"
        )
    if os.path.abspath(dest) == os.path.abspath(path) or (
        os.path.exists(dest) and os.path.samefile(dest, path)
    ):
        raise CommandError("DEST is the store itself; choose another file")
    if os.path.exists(dest) and not args.force:
        raise CommandError(f"{dest} exists; pass --force to replace it")
    if not os.path.isdir(os.path.dirname(os.path.abspath(dest))):
        raise CommandError(f"folder of {dest} does not exist")
    print(_report(path, dest, _one(path, dest)))
    return 0


def _run_rolling(args: argparse.Namespace, path: str) -> int:
    folder = args.dest
    if not os.path.isdir(folder):
        raise CommandError(f"{folder} is not a folder; rolling backups need an existing folder")
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {
        sig: signal.signal(sig, on_signal)
        for sig in (signal.SIGINT, signal.SIGTERM)
        if threading.current_thread() is threading.main_thread()
    }
    try:
        taken = roll(path, folder, every=args.every, keep=args.keep or DEFAULT_KEEP, stop=stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if args.every is not None:
        print(f"stopped after {taken:,} backup{'s' if taken != 1 else ''}", flush=True)
    return 0
