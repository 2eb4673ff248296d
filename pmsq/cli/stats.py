"""``pmsq stats URL [QUEUE]``: one snapshot, as a table, JSON or Prometheus text."""

from __future__ import annotations

import argparse
import json

from pmsq.cli._common import add_url, open_store, require_queue

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
    from pmsq.alerts import evaluate, load_rules
    from pmsq.backends.presence import with_presence
    from pmsq.monitor.workers import read_workers, render_workers
    from pmsq.schedules.health import (
        read_schedules,
        schedule_alerts,
        schedule_section,
        schedules_prometheus,
        schedules_to_dicts,
    )

    with open_store(args.url) as broker:
        if args.queue is not None:
            require_queue(broker, args.queue)
        now = broker.clock.time()
        # with_presence: live consumers per queue, from the workers' heartbeats.
        snap = with_presence(broker.backend, broker.backend.stats(args.queue, now=now), now)
        rules = load_rules(broker.backend, snap.queues)
        plans = [s for s in read_schedules(broker.runtime) if args.queue in (None, s.queue)]
        workers = read_workers(broker)
        if workers is not None and args.queue is not None:
            workers = [w for w in workers if args.queue in w.queues]
    if args.json:
        data = snap.to_dict()
        data["alerts"] = [a.to_dict() for a in evaluate(snap, rules)]
        data["alerts"] += [a.to_dict() for a in schedule_alerts(plans, now)]
        data["schedules"] = schedules_to_dicts(plans, now)
        # None: the backend keeps no heartbeats (unknown, not "no workers").
        data["workers"] = None if workers is None else [w.to_dict() for w in workers]
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    if args.prometheus:
        from pmsq.monitor.prometheus import to_prometheus

        alerts = evaluate(snap, rules) + schedule_alerts(plans, now)
        print(to_prometheus(snap, alerts) + schedules_prometheus(plans, now), end="")
        return 0
    from rich.console import Console

    from pmsq.monitor.render import render
    from pmsq.monitor.totals import render_totals

    console = Console()
    console.print(
        render(snap, None, rules, console.width, tenants=args.tenants, title=f"pmsq {args.url}")
    )
    if snap.queues:
        console.print()
        console.print(render_totals(snap, tenants=args.tenants))
    if plans:
        console.print(schedule_section(plans, now))
    console.print(render_workers(workers, now))
    return 0
