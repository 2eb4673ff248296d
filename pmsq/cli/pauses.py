"""``pmsq pauses URL``: the paused scopes and open circuits of a store."""

from __future__ import annotations

import argparse
import json

from pmsq.cli._common import add_url, open_store

EXAMPLES = """\
Open circuits come first: a circuit breaker (declare_queue(circuit=...))
paused that scope because its handlers kept failing; it lets one message
through when its time is up. Times are UTC.

examples:
  pmsq pauses pms.db
  pmsq pauses pms.db --json
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``pauses`` subcommand."""
    p = sub.add_parser(
        "pauses",
        help="paused queues, tenants and keys, and open circuits",
        description=(
            "List the pauses in force: scope, whether a circuit breaker opened it, "
            "since when, until when, and why."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_url(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the pauses."""
    from pmsq.monitor.pauses import pause_table, pauses_to_dicts

    with open_store(args.url) as broker:
        pauses = broker.pauses()
        now = broker.clock.time()
    if args.json:
        print(json.dumps({"pauses": pauses_to_dicts(pauses)}, indent=2))
        return 0
    from rich.console import Console

    console = Console(highlight=False, width=max(80, Console().width))
    if not pauses:
        console.print("nothing paused, no circuit open")
        return 0
    console.print(pause_table(pauses, now))
    return 0
