"""``pmsq monitor URL``: a live dashboard of a store another process is writing."""

from __future__ import annotations

import argparse

from pmsq.cli._common import add_url, open_store, positive_seconds, routes_of

EXAMPLES = """\
columns:
  ready      deliverable now
  delay(ed)  waiting for a delay, a retry backoff or an earlier message of
             its key
  in flight  leased to a worker        dead       dead letters kept
  oldest     age of the oldest waiting message
  done/s     acks per second           fail/s     failed deliveries per second
             (both measured over the last ~5 s)
  fail%      failed share over the last minute
  p50/p95    handler time over the last minute
  trend      done/s over the last refreshes (at 100 columns and wider), every
             queue drawn on one scale: a full bar is the rate in the header

Colours follow the alert rules (broker.alert(...)): red = critical (dead
letters, failure rate), yellow = warning (depth, oldest age). Without a
terminal (piped, cron, CI) a plain snapshot is printed every refresh.

examples:
  pmsq monitor /var/lib/pms/pms.db
  pmsq monitor sqlite:///pms.db --refresh 2 --tenants
  pmsq monitor pms.db > monitor.log     # plain snapshots, one block per refresh
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``monitor`` subcommand."""
    p = sub.add_parser(
        "monitor",
        help="live dashboard: depth, in flight, dead, age, throughput, latency, alerts",
        description=(
            "Watch a store's queues live: one stats snapshot per refresh, rates from the "
            "difference between snapshots, alert colours from the stored rules. Exits 0 on "
            "Ctrl-C or SIGTERM."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_url(p)
    p.add_argument(
        "--refresh",
        type=positive_seconds,
        default=1.0,
        metavar="S",
        help="seconds between snapshots (default 1)",
    )
    p.add_argument("--tenants", action="store_true", help="add a line per tenant under each queue")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Watch until SIGINT/SIGTERM; exit 0."""
    import threading

    from pmsq.monitor.live import install_stop_signals, watch

    broker = open_store(args.url, routes_of(args))
    stop = threading.Event()
    restore = install_stop_signals(stop)
    try:
        watch(
            broker,
            stop=stop,
            refresh=args.refresh,
            tenants=args.tenants,
            title=f"pmsq monitor {args.url}",
        )
    finally:
        restore()
        broker.close()
    return 0
