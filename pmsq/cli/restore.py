"""``pmsq restore BACKUP URL``: put a backup in place of a store, safely."""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import tempfile
import time

from pmsq.backends.sqlite import files
from pmsq.cli._common import CommandError, probe_sqlite, sqlite_path
from pmsq.cli.backup import Snapshot, copy_store, verify

__all__ = ["in_flight", "run"]

EXAMPLES = """\
Checks the backup (quick_check), refuses a store that some process has open
(stop the app and its workers first) and, without --force, a store that
exists. The backup is copied beside the store, checked against the backup,
then renamed into place; a replaced store is kept as URL.replaced-STAMP
with its -wal, never deleted.

What the restore brings back: every message as it was at the backup. Those
in flight then (listed) and those acked after the backup are delivered
again: handlers must be idempotent, as at-least-once delivery always asks.
Messages put after the backup are not in it: re-send them from their source.
In-flight leases are cut short, so those messages are delivered as soon as
workers start.

examples:
  pmsq restore /backups/pms-20261203T120000.000Z.db /var/lib/pms/pms.db
  pmsq restore copy.db sqlite:///pms.db --force   # replace an existing store
"""

_SHOWN = 20


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``restore`` subcommand."""
    p = sub.add_parser(
        "restore",
        help="restore a store from a pmsq backup (refuses a store in use)",
        description="Put BACKUP in place of the store at URL and list what will be redelivered.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("backup", metavar="BACKUP", help="a file written by pmsq backup")
    p.add_argument("url", metavar="URL", help="the store to restore (sqlite:///pms.db or a path)")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing store (it is kept as URL.replaced-STAMP)",
    )
    p.set_defaults(func=run)


def in_flight(path: str) -> list[tuple[str, str, str | None, str, int]]:
    """The messages leased to a consumer in the store at ``path``.

    Returns:
        ``(queue, id, key, tenant, attempt)`` of each, by queue and put order.
    """
    conn = sqlite3.connect(files.readonly_uri(path), uri=True)
    try:
        rows = conn.execute(
            "SELECT queue, id, key, tenant, attempt FROM pmsq_messages WHERE state = 1 "
            "ORDER BY queue, seq"
        ).fetchall()
    finally:
        conn.close()
    return [(r[0], r[1], r[2], r[3], int(r[4])) for r in rows]


def _refuse_live(target: str) -> None:
    others = [pid for pid in files.holders(target) if pid != os.getpid()]
    if others or files.in_use(target):
        who = f"process(es) {', '.join(map(str, others))}" if others else "another process"
        raise CommandError(
            f"the store {target} is in use by {who}: stop the app and its workers before "
            "restoring (a restore under a running process splits the store in two)"
        )


def _existing_messages(target: str) -> int | None:
    """Messages in the store at ``target``; ``None`` if it is unreadable."""
    try:
        conn = sqlite3.connect(files.readonly_uri(target), uri=True)
    except sqlite3.Error:
        return None
    try:
        return int(conn.execute("SELECT count(*) FROM pmsq_messages").fetchone()[0])
    except sqlite3.Error:
        return None
    finally:
        conn.close()


def _set_aside(target: str) -> str:
    """Rename the store and its sidecars to ``TARGET.replaced-STAMP``; return that name."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = f"{target}.replaced-{stamp}"
    # The -wal moves with its file: it holds commits the main file may not have yet.
    for suffix in ("", *files.SIDECARS):
        if os.path.exists(target + suffix):
            os.rename(target + suffix, aside + suffix)
    return aside


def _cut_leases(path: str, now: float) -> int:
    # Nobody holds those leases any more: let the first worker take them again.
    conn = sqlite3.connect(files.uri(path), isolation_level=None)
    try:
        cur = conn.execute(
            "UPDATE pmsq_messages SET lease_expires = ? WHERE state = 1 AND lease_expires > ?",
            (now, now),
        )
        return cur.rowcount
    finally:
        conn.close()


def _print_in_flight(rows: list[tuple[str, str, str | None, str, int]]) -> None:
    if not rows:
        print("no message was in flight at the backup")
        return
    print(
        f"{len(rows):,} message{'s' if len(rows) != 1 else ''} in flight at the backup "
        "will be delivered again:"
    )
    for queue, mid, key, tenant, attempt in rows[:_SHOWN]:
        extra = "".join(
            [f" key={key}" if key is not None else "", f" tenant={tenant}" if tenant else ""]
        )
        print(f"  {queue} {mid}{extra} (attempt {attempt})")
    if len(rows) > _SHOWN:
        print(f"  ... and {len(rows) - _SHOWN:,} more")


def restore(backup: str, target: str, *, force: bool) -> tuple[Snapshot, str | None]:
    """Put ``backup`` in place of the store at ``target``.

    Returns:
        The backup's snapshot, and the name the replaced store was kept under (or ``None``).

    Raises:
        CommandError: the backup is damaged, the store is in use, or exists without ``force``.
        sqlite3.Error: SQLite refused (translated by the caller).
        OSError: the file system refused.
    """
    source = verify(backup, source=backup)
    _refuse_live(target)
    if os.path.exists(target) and os.path.getsize(target) > 0 and not force:
        held = _existing_messages(target)
        what = f"{held:,} messages" if held is not None else "a file"
        raise CommandError(
            f"{target} exists and holds {what}; pass --force to replace it (it is kept "
            f"as {target}.replaced-STAMP)"
        )
    folder = os.path.dirname(os.path.abspath(target))
    fd, tmp = tempfile.mkstemp(prefix=".pmsq-restore-", suffix=".db", dir=folder)
    os.close(fd)
    aside = None
    try:
        seen = copy_store(backup, tmp)
        if seen != source:
            raise CommandError(f"{backup} changed while it was being restored; try again")
        _cut_leases(tmp, time.time())
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        _refuse_live(target)  # once more, right before the switch
        if os.path.exists(target):
            aside = _set_aside(target)
        files.remove_sidecars(target)
        os.replace(tmp, target)
        tmp = ""
    finally:
        if tmp:
            for suffix in ("", *files.SIDECARS):
                with contextlib.suppress(OSError):
                    os.remove(tmp + suffix)
    restored = verify(target, source=backup)
    if (restored.messages, restored.in_flight) != (source.messages, source.in_flight):
        raise CommandError(
            f"{target} does not read back as the backup ({restored.messages:,} messages "
            f"instead of {source.messages:,}); is a process using it?"
        )
    return source, aside


def run(args: argparse.Namespace) -> int:
    """Restore and report what will be delivered again."""
    target = sqlite_path(args.url)
    if target is None or target == ":memory:":
        raise CommandError(
            "pmsq restore restores SQLite stores; restore a server store with its own tools"
        )
    probe_sqlite(args.backup)
    if os.path.isdir(target):
        raise CommandError(f"{target} is a directory; give the store's file")
    if not os.path.isdir(os.path.dirname(os.path.abspath(target))):
        raise CommandError(f"folder of {target} does not exist")
    if os.path.exists(target) and os.path.samefile(target, args.backup):
        raise CommandError("BACKUP is the store itself")
    try:
        snap, aside = restore(args.backup, target, force=args.force)
        rows = in_flight(target)
    except sqlite3.Error as exc:
        from pmsq.backends.sqlite.errors import translate

        raise translate(exc, args.backup, busy_timeout=30.0) from exc
    except OSError as exc:
        raise CommandError(f"cannot restore into {target}: {exc.strerror or exc}") from exc
    if aside:
        print(f"the store that was at {target} is kept as {aside}")
    print(f"restored {args.backup} to {target}: {snap.messages:,} messages, quick_check ok")
    _print_in_flight(rows)
    print(
        "messages acked after the backup will be delivered again, and messages put after "
        "it are not in it: re-send those from their source"
    )
    return 0
