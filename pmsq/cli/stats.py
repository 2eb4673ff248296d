"""``pmsq stats URL [QUEUE]``: one snapshot, as a table, JSON or Prometheus text."""

from __future__ import annotations

import argparse
import json

from pmsq.cli._common import add_url, open_store, require_queue, routes_of

EXAMPLES = """\
All three outputs come from the same pmsq.Stats snapshot.

examples:
  pmsq stats pms.db                      # a table of every queue, with alerts
  pmsq stats pms.db email --tenants      # one queue, a line per tenant
  pmsq stats pms.db --json | jq '.queues.email.dead'
  pmsq stats pms.db --prometheus > /var/lib/node_exporter/textfile/pmsq.prom
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``stats`` subcommand."""
    p = sub.add_parser(
        "stats",
        help="one snapshot of every queue (table, --json or --prometheus)",
        description=(
            "Print one snapshot of the store's queues: depth, in flight, dead, oldest age, "
            "per-minute rates, handler time and alerts, then the totals since the store "
            "was created (processed, failed, retried, dead-lettered). Exit 0 even when "
            "alerts are raised (use pmsq doctor for a health verdict)."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_url(p)
    p.add_argument("queue", nargs="?", metavar="QUEUE", help="only this queue")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="JSON: Stats.to_dict() plus alerts")
    fmt.add_argument(
        "--prometheus",
        action="store_true",
        help="Prometheus text exposition format (gauges and counters, tenant labels)",
    )
    p.add_argument("--tenants", action="store_true", help="table: add a line per tenant")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the snapshot."""
    from pmsq.monitor.exposition import as_json, as_prometheus, report
    from pmsq.monitor.workers import read_workers, render_workers
    from pmsq.schedules.health import schedule_section

    with open_store(args.url, routes_of(args)) as broker:
        if args.queue is not None:
            require_queue(broker, args.queue)
        r = report(broker, args.queue)
        workers = read_workers(broker)
        if workers is not None and args.queue is not None:
            workers = [w for w in workers if args.queue in w.queues]
    snap, rules, plans, now = r.stats, r.rules, r.schedules, r.now
    if args.json:
        data = as_json(r)
        # None: the backend keeps no heartbeats (unknown, not "no workers").
        data["workers"] = None if workers is None else [w.to_dict() for w in workers]
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    if args.prometheus:
        print(as_prometheus(r), end="")
        return 0
    from rich.console import Console

    from pmsq.monitor.render import render
    from pmsq.monitor.totals import render_totals

    console = Console()
    console.print(
        render(
            snap,
            None,
            rules,
            console.width,
            tenants=args.tenants,
            title=f"pmsq {args.url}",
            # Pauses and open circuits: alerts the figures alone do not raise.
            extra_alerts=[a for a in r.alerts if a.metric.split(":")[0] in ("paused", "circuit")],
        )
    )
    if snap.queues:
        console.print()
        console.print(render_totals(snap, tenants=args.tenants))
    if plans:
        console.print(schedule_section(plans, now))
    console.print(render_workers(workers, now))
    return 0
