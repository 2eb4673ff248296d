"""``pmsq schedules URL``: stored schedules, when they fire next and how late they run."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

from pmsq.cli._common import add_url, open_store
from pmsq.schedules import Schedule

EXAMPLES = """\
examples:
  pmsq schedules pms.db
  pmsq schedules postgresql://pms@db/pms --json
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``schedules`` subcommand."""
    p = sub.add_parser(
        "schedules",
        help="stored schedules: queue, cron or period, zone, next and last run, lag",
        description=(
            "List the schedules stored in a store (every tenant's), when each fires next, "
            "the last slot it fired and how late: the lag of its last firing, or how "
            "overdue its next slot is when no worker has fired it yet. Times are UTC."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_url(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def lag(s: Schedule, now: dt.datetime) -> float | None:
    """How late the schedule runs: overdue seconds now, else its last firing's lag."""
    overdue = s.overdue(now)
    return overdue if overdue > 0 else s.lag


def _when(t: dt.datetime | None) -> str:
    return "-" if t is None else t.strftime("%m-%d %H:%M:%S")


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}s" if value < 120 else f"{value / 60:.0f}m"


def run(args: argparse.Namespace) -> int:
    """Print the schedules."""
    with open_store(args.url) as broker:
        schedules = broker.schedules()
        now = dt.datetime.fromtimestamp(broker.clock.time(), dt.UTC)
    if args.json:
        data: list[dict[str, Any]] = [
            {
                "name": s.name,
                "tenant": s.tenant,
                "queue": s.queue,
                "cron": s.cron,
                "every": s.every,
                "tz": s.tz,
                "catch_up": s.catch_up,
                "next_at": None if s.next_at is None else s.next_at.isoformat(),
                "last_at": None if s.last_at is None else s.last_at.isoformat(),
                "lag": lag(s, now),
                "paused": s.paused,
            }
            for s in schedules
        ]
        print(json.dumps({"schedules": data}, indent=2, sort_keys=True))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=max(80, Console().width))
    if not schedules:
        console.print("no schedules in this store yet")
        return 0
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("name", overflow="fold", min_width=16)
    for column in ("queue", "when", "next (UTC)", "last (UTC)", "lag"):
        table.add_column(column, overflow="fold")
    for s in schedules:
        name = s.name if s.tenant is None else f"{s.tenant}/{s.name}"
        table.add_row(
            name,
            s.queue,
            s.timing if s.cron is None or s.tz == "UTC" else f"{s.cron}\n{s.tz}",
            _when(s.next_at),
            _when(s.last_at),
            _seconds(lag(s, now)),
        )
    console.print(table)
    return 0
