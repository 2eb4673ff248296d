"""``pmsq demo``: a PMS day on an embedded store, watched live, verified at the end."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from pmsq.cli._common import CommandError, positive_seconds

EXAMPLES = """\
Four management companies and their properties publish bookings,
modifications, cancellations, payments and guest messages; calendar, email,
cleaning and accounting workers consume them. Injected failures: a flaky
email provider (retried with backoff), payment gateway timeouts (retried),
poison guest messages (dead-lettered, then sent by SMS from email.fallback).
The run ends with a check that every event was processed or dead-lettered,
per-property order held and each calendar equals a replay of its events;
exit 1 if any check fails. The store is kept: inspect it afterwards.

examples:
  pmsq demo                          # 20 s, live monitor, a temporary store
  pmsq demo --duration 5 --no-monitor
  pmsq demo --db day.db && pmsq dlq list day.db email
  pmsq demo --db day.db --payments-db pay.db  # payments in their own store
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``demo`` subcommand."""
    p = sub.add_parser(
        "demo",
        help="a PMS day with injected failures, watched live and verified",
        description="Run a property-management day through pmsq and verify the outcome.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--db", metavar="PATH", help="store file to create (default: a temp file)")
    p.add_argument(
        "--duration",
        type=positive_seconds,
        default=20.0,
        metavar="S",
        help="seconds of publishing (default 20); draining follows",
    )
    p.add_argument(
        "--no-monitor", action="store_true", help="print progress lines instead of the dashboard"
    )
    p.add_argument(
        "--payments-db",
        metavar="URL",
        help="keep the payments (the accounting queue) in a store of their own: a new "
        "SQLite file or a store URL (docs/several-stores.md)",
    )
    p.add_argument("--seed", type=int, help="seed for a reproducible day")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the day, show it, verify it."""
    from pmsq.demo.run import run_demo

    if args.db:
        path = args.db
        if os.path.exists(path):
            raise CommandError(f"{path} exists; the demo needs a new file (or omit --db)")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise CommandError(f"folder {folder} does not exist")
    else:
        path = os.path.join(tempfile.mkdtemp(prefix="pmsq-demo-"), "pms.db")
    routes = None
    if args.payments_db:
        pay = args.payments_db
        if "://" not in pay and os.path.exists(pay):
            raise CommandError(f"{pay} exists; the demo needs a new file for the payments")
        routes = {"accounting": pay}
    live = not args.no_monitor and sys.stdout.isatty()
    return run_demo(path, duration=args.duration, seed=args.seed, live=live, routes=routes)
