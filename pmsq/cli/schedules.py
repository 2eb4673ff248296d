"""``pmsq schedules URL``: stored schedules, when they fire next and how late they run."""

from __future__ import annotations

import argparse
import json

from pmsq.cli._common import add_url, open_store, routes_of

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


def run(args: argparse.Namespace) -> int:
    """Print the schedules.

    Raises:
        ConfigurationError: the store's backend has no schedules.
    """
    from pmsq.schedules.health import render_schedules, schedules_to_dicts

    with open_store(args.url, routes_of(args)) as broker:
        schedules = broker.schedules()
        now = broker.clock.time()
    if args.json:
        print(json.dumps({"schedules": schedules_to_dicts(schedules, now)}, indent=2))
        return 0
    from rich.console import Console

    console = Console(highlight=False, width=max(80, Console().width))
    if not schedules:
        console.print("no schedules in this store yet")
        return 0
    console.print(render_schedules(schedules, now))
    return 0
