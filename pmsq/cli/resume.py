"""``pmsq resume URL QUEUE [--tenant T] [--key K]``: lift a pause."""

from __future__ import annotations

import argparse
import sys

from pmsq.cli._common import add_url, open_store, require_queue
from pmsq.cli.pause import add_scope, check_scope, describe_scope

EXAMPLES = """\
A resume lifts exactly the pause of the scope it names: resuming a queue
lifts its queue-wide pause, not the pauses of its tenants or keys (pmsq
pauses lists them all). An open circuit can be resumed too: its scope then
flows again at once, without waiting for the probe.

exit status: 0 the pause was lifted, 1 an error or no such pause.

examples:
  pmsq resume pms.db channel-sync
  pmsq resume pms.db channel-sync --tenant acme
  pmsq resume pms.db calendar --tenant acme --key property:4521
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``resume`` subcommand."""
    p = sub.add_parser(
        "resume",
        help="lift the pause of a queue, a tenant or a key",
        description="Lift the pause of one scope: a queue, one tenant in it, or one key.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_url(p)
    add_scope(p, "resume")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Resume; exit 1 (naming the pauses in force on the queue) if there was none."""
    from pmsq.monitor.pauses import scope_of

    check_scope(args)
    scope = describe_scope(args.queue, args.tenant, args.key)
    with open_store(args.url) as broker:
        require_queue(broker, args.queue)
        if broker.resume(args.queue, tenant=args.tenant, key=args.key):
            print(f"resumed {scope}")
            return 0
        others = [scope_of(p) for p in broker.pauses() if p.queue == args.queue]
    held = "; ".join(others) if others else "none"
    print(
        f"pmsq resume: {scope} is not paused (pauses on {args.queue}: {held})",
        file=sys.stderr,
    )
    return 1
