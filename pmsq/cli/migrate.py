"""``pmsq migrate SRC_URL DST_URL``: copy a store into another backend, resumably."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import pmsq
from pmsq.backends.base import Backend
from pmsq.backends.registry import split_scheme
from pmsq.cli._common import CommandError, open_store, sqlite_path
from pmsq.config import check_queue_name
from pmsq.migrate import (
    BackendSource,
    OneQueue,
    PersistQueueSource,
    QueueCheck,
    Source,
    copy,
    require_export,
    require_import,
    verify,
)

EXAMPLES = """\
Copies queue declarations, bindings, pending messages (ids, keys, order,
attempts, delays, headers) and dead letters, plus the dedup ids still
remembered, recurring schedules with their cursors (no slot fires twice or
is skipped) and the pauses an operator set (not circuit-breaker ones). A
destination schedule of the same name defined otherwise stops it first. The
source is only read. Stop workers and producers first: a message leased
right now would be copied as pending and delivered again by the new store,
so migrate refuses a source with messages in flight unless --force.

One queue: --queue Q moves only queue Q (its declaration, bindings, pending
messages in key order, dead letters, dedup ids, pauses and the schedules
that put to it), so an app can move its critical queues to another store one
at a time and route them there with pmsq.connect(url, routes={"Q": DST_URL})
(docs/several-stores.md). The source keeps its copy; a routed broker reads Q
only from the store its routes name. Stop Q's workers and producers first.

Safe to interrupt: ids are kept and an id already in the destination is
skipped, so running the same command again copies only what is missing. It
ends by comparing pending and dead counts per queue in both stores and exits
1 if they differ.

persist-queue: persistqueue:///DIR reads an SQLiteAckQueue (DIR is the path
given to persistqueue.SQLiteAckQueue, or its data.db) into the queue named
by --queue; ?name=NAME picks the persist-queue by name and ?serializer=json
a JSON one. Ready and unacked items become pending messages, ack_failed
items dead letters. persist-queue pickles by default, so this unpickles the
file's items: only migrate a file your own app wrote.

examples:
  pmsq migrate sqlite:///pms.db postgresql://pms@db:5432/pms
  pmsq migrate pms.db 'postgresql://pms@db/pms?schema=pmsq' --batch 2000
  pmsq migrate postgresql://pms@db/pms sqlite:///back.db     # and back
  pmsq migrate pms.db postgresql://pms@db/pms --queue payments   # one queue
  pmsq migrate persistqueue:///var/app/queue pms.db --queue email
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``migrate`` subcommand."""
    p = sub.add_parser(
        "migrate",
        help="copy queues, messages and dead letters to another backend (resumable)",
        description="Copy a store (or a persist-queue file) into another store, then verify.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", metavar="SRC_URL", help="store to read (or persistqueue:///dir)")
    p.add_argument("dst", metavar="DST_URL", help="store to fill (created if new)")
    p.add_argument(
        "--queue",
        metavar="NAME",
        help="move only this queue (a pmsq source), or the destination queue of a "
        "persist-queue source (required there)",
    )
    p.add_argument(
        "--batch",
        type=_positive_int,
        default=500,
        metavar="N",
        help="messages per destination transaction (default 500)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="copy even though the source has messages in flight (they arrive as pending)",
    )
    p.set_defaults(func=run)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= 100_000:
        raise argparse.ArgumentTypeError(f"expected 1 to 100000, got {text!r}")
    return value


def _is_persistqueue(url: str) -> bool:
    return split_scheme(url)[0] == "persistqueue"


def _identity(url: str, backend: Backend | None = None) -> tuple[Any, ...]:
    path = sqlite_path(url)
    if path is not None:
        return ("sqlite", os.path.realpath(path))
    if backend is not None:
        return (
            type(backend).__name__,
            getattr(backend, "url", url),
            getattr(backend, "schema", ""),
        )
    return ("url", url)


def _open_source(args: argparse.Namespace) -> tuple[Source, bool]:
    """The source and whether its queue declarations are authoritative."""
    if _is_persistqueue(args.src):
        if not args.queue:
            raise CommandError("a persistqueue:// source needs --queue NAME (the pmsq queue)")
        check_queue_name(args.queue)
        return PersistQueueSource(args.src, args.queue), False
    broker = open_store(args.src)
    try:
        require_export(broker.backend)
        source: Source = BackendSource(broker.backend, getattr(broker.backend, "url", args.src))
        if args.queue:
            source = OneQueue(source, check_queue_name(args.queue))
    except BaseException:
        broker.close()
        raise
    return source, True


def _open_dest(args: argparse.Namespace) -> pmsq.Broker:
    if _is_persistqueue(args.dst):
        raise CommandError("persistqueue:// can only be a source; give a pmsq store as DST_URL")
    path = sqlite_path(args.dst)
    if path == ":memory:":
        raise CommandError("an in-memory store vanishes when migrate exits; give a file path")
    if path is not None and os.path.isdir(path):
        raise CommandError(f"{path} is a directory; give the destination store's file name")
    return pmsq.connect(args.dst)


def run(args: argparse.Namespace) -> int:
    """Migrate, showing progress on a terminal, and print the verification table."""
    from rich.console import Console

    if _identity(args.src) == _identity(args.dst) or args.src == args.dst:
        raise CommandError("SRC_URL and DST_URL are the same store")
    source, authoritative = _open_source(args)
    try:
        # Checked before the destination is opened (and, if new, created).
        flying = source.in_flight()
        if flying and not args.force:
            listed = ", ".join(f"{q}: {n}" for q, n in sorted(flying.items()))
            raise CommandError(
                f"the source has messages in flight ({listed}); stop its workers first "
                "(a leased message would be copied as pending and delivered again), "
                "or pass --force"
            )
        dest = _open_dest(args)
        try:
            backend = dest.backend
            whole = source.source if isinstance(source, OneQueue) else source
            if isinstance(whole, BackendSource) and _identity(args.src, whole.backend) == _identity(
                args.dst, backend
            ):
                raise CommandError("SRC_URL and DST_URL are the same store")
            require_import(backend)
            err = Console(stderr=True, highlight=False)
            if flying:
                err.print(
                    f"warning: copying {sum(flying.values())} in-flight message(s) as pending"
                )
            total = sum(p + d for p, d in source.counts().values())
            result = _copy_with_progress(source, backend, args.batch, authoritative, total, err)
            extra = source.warnings() if isinstance(source, OneQueue) else []
            for warning in (*result.warnings, *extra):
                err.print(f"warning: {warning}")
            checks = verify(source.counts(), backend)
            dst_name = getattr(backend, "url", args.dst)
        finally:
            dest.close()
    finally:
        source.close()
    out = Console(highlight=False)
    print(
        f"migrated {source.description} → {dst_name}: {result.copied:,} message(s) copied, "
        f"{result.skipped:,} already there, {result.dedup_copied:,} dedup id(s)" + _extras(result)
    )
    _print_checks(out, checks)
    if all(c.ok for c in checks):
        print("verified: the destination holds every pending message and dead letter")
        return 0
    bad = ", ".join(c.queue for c in checks if not c.ok)
    print(
        f"pmsq migrate: error: counts differ for {bad}; was something still writing to "
        "either store? run the same command again once it is idle",
        file=sys.stderr,
    )
    return 1


def _extras(result: Any) -> str:
    parts = []
    if result.schedules_copied:
        parts.append(f"{result.schedules_copied:,} schedule(s), cursors kept")
    if result.pauses_copied:
        parts.append(f"{result.pauses_copied:,} pause(s)")
    return "".join(f"; {p}" for p in parts)


def _copy_with_progress(
    source: Source, dest: Backend, batch: int, declare: bool, total: int, console: Any
) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task("migrating", total=total or None)

        def on_page(queue: str, n: int) -> None:
            progress.update(task, advance=n, description=f"migrating {queue}")

        return copy(source, dest, batch=batch, declare=declare, on_page=on_page)


def _print_checks(console: Any, checks: list[QueueCheck]) -> None:
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 1, 0, 0))
    table.add_column("queue", no_wrap=True)
    for name in ("source pending", "dest pending", "source dead", "dest dead"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("check", no_wrap=True)
    for c in checks:
        table.add_row(
            c.queue,
            f"{c.source_pending:,}",
            f"{c.dest_pending:,}",
            f"{c.source_dead:,}",
            f"{c.dest_dead:,}",
            "ok" if c.ok else "[red]MISMATCH[/red]",
        )
    console.print(table)
