"""``pmsq bench [URL]``: what this disk gives — puts/s, end-to-end messages/s, latency."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable

import pmsq
from pmsq import benchmark

EXAMPLES = """\
examples:
  pmsq bench                      # a temporary file next to the system temp dir
  pmsq bench /var/lib/pms/bench.db
  pmsq bench --messages 5000      # a longer run
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``bench`` subcommand."""
    p = sub.add_parser(
        "bench",
        help="measure what this disk gives: puts/s, end-to-end msg/s, latency",
        description=(
            "Measure durable puts, end-to-end throughput through a Worker and put-to-handler "
            "latency on a scratch store. The store is a new file (default: a temporary "
            "directory); an existing file is refused so nothing of yours is touched."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("url", nargs="?", help="scratch store URL or path (must not exist)")
    p.add_argument("--messages", type=int, default=2000, help="messages per probe (default 2000)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the probes with a progress bar and print a table."""
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    n = max(100, int(args.messages))
    tmp = None
    if args.url:
        path = args.url.split("sqlite:///", 1)[-1]
        if os.path.exists(path):
            raise pmsq.ConfigurationError(
                f"{path!r} exists; pmsq bench needs a new scratch file so it cannot harm a store"
            )
        base = path
    else:
        tmp = tempfile.TemporaryDirectory(prefix="pmsq-bench-")
        base = os.path.join(tmp.name, "bench.db")
    counter = [0]

    def fresh() -> Callable[[], pmsq.Broker]:
        counter[0] += 1
        target = f"{base}.{counter[0]}" if counter[0] > 1 else base
        return lambda: pmsq.connect(target, durability="full")

    probes: list[tuple[str, Callable[[], str]]] = [
        ("durable put, 1 thread", lambda: f"{benchmark.put_single(fresh(), n):,.0f} msg/s"),
        (
            "durable put, 16 threads",
            lambda: f"{benchmark.put_parallel(fresh(), n * 2, 16):,.0f} msg/s",
        ),
        (
            "put_many, batches of 100",
            lambda: f"{benchmark.put_many(fresh(), n * 10, 100):,.0f} msg/s",
        ),
        ("get + ack, one at a time", lambda: f"{benchmark.get_ack(fresh(), n):,.0f} msg/s"),
        (
            "end to end, Worker(8), no-op",
            lambda: f"{benchmark.end_to_end(fresh(), n * 2):,.0f} msg/s",
        ),
        (
            "put → handler latency p50",
            lambda: f"{benchmark.median(benchmark.latency(fresh(), 100)):.2f} ms",
        ),
    ]
    console = Console()
    results: list[tuple[str, str]] = []
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("measuring", total=len(probes))
            for label, probe in probes:
                progress.update(task, description=label)
                results.append((label, probe()))
                progress.advance(task)
    finally:
        if tmp is not None:
            tmp.cleanup()
        else:
            for i in range(1, counter[0] + 1):
                for suffix in ("", "-wal", "-shm"):
                    target = f"{base}.{i}" if i > 1 else base
                    if os.path.exists(target + suffix):
                        os.remove(target + suffix)
    table = Table(title=f"pmsq bench ({n:,} messages per probe, durability=full)")
    table.add_column("measure")
    table.add_column("result", justify="right")
    for label, value in results:
        table.add_row(label, value)
    console.print(table)
    return 0
