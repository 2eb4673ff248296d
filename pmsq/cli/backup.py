"""``pmsq backup URL DEST``: a consistent copy of a live SQLite store."""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import tempfile

from pmsq.cli._common import CommandError, probe_sqlite, sqlite_path

EXAMPLES = """\
Uses SQLite's online backup API: the copy is one consistent instant of the
store even while workers put, claim and ack (writers are not blocked). The
copy is written to a temporary file beside DEST, checked, then renamed, so
DEST is never left half-written.

To restore: stop every process using the store, move the damaged file and
its -wal/-shm files aside, copy the backup into place, start again.

examples:
  pmsq backup /var/lib/pms/pms.db /backups/pms-$(date +%F).db
  pmsq backup sqlite:///pms.db pms-copy.db --force     # overwrite an old copy
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``backup`` subcommand."""
    p = sub.add_parser(
        "backup",
        help="copy a live SQLite store consistently (online backup API)",
        description="Copy a SQLite store to DEST while it is in use, then check the copy.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("url", metavar="URL", help="store URL (sqlite:///pms.db) or a plain path")
    p.add_argument("dest", metavar="DEST", help="file to write (refused if it exists)")
    p.add_argument("--force", action="store_true", help="replace DEST if it exists")
    p.set_defaults(func=run)


def backup(src_path: str, dest: str) -> int:
    """Copy ``src_path`` to ``dest`` atomically; return the number of messages in the copy.

    Raises:
        CommandError: the copy failed its integrity check, or the file system refused.
    """
    folder = os.path.dirname(os.path.abspath(dest))
    fd, tmp = tempfile.mkstemp(prefix=".pmsq-backup-", suffix=".db", dir=folder)
    os.close(fd)
    try:
        src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True, timeout=30.0)
        try:
            dst = sqlite3.connect(tmp)
            try:
                # pages=-1: one step inside one read transaction, so the copy is
                # a single consistent instant; WAL lets writers go on meanwhile.
                src.backup(dst, pages=-1)
                problems = [r[0] for r in dst.execute("PRAGMA quick_check").fetchall()]
                if problems != ["ok"]:
                    raise CommandError(
                        f"the copy failed its integrity check ({'; '.join(problems[:3])}); "
                        f"run pmsq doctor {src_path}"
                    )
                count = int(dst.execute("SELECT count(*) FROM pmsq_messages").fetchone()[0])
            finally:
                dst.close()
        finally:
            src.close()
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
        tmp = ""
    finally:
        if tmp:
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(OSError):
                    os.remove(tmp + suffix)
    return count


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
    if os.path.isdir(dest):
        raise CommandError(f"{dest} is a directory; give the backup's file name")
    if os.path.abspath(dest) == os.path.abspath(path) or (
        os.path.exists(dest) and os.path.samefile(dest, path)
    ):
        raise CommandError("DEST is the store itself; choose another file")
    if os.path.exists(dest) and not args.force:
        raise CommandError(f"{dest} exists; pass --force to replace it")
    if not os.path.isdir(os.path.dirname(os.path.abspath(dest))):
        raise CommandError(f"folder of {dest} does not exist")
    try:
        count = backup(path, dest)
    except sqlite3.Error as exc:
        from pmsq.backends.sqlite.errors import translate

        raise translate(exc, path, busy_timeout=30.0) from exc
    except OSError as exc:
        raise CommandError(f"cannot write {dest}: {exc.strerror or exc}") from exc
    size = os.path.getsize(dest)
    print(f"backed up {path} to {dest}: {size:,} bytes, {count:,} messages, quick_check ok")
    return 0
