"""``pmsq peek URL QUEUE``: read waiting and in-flight messages without claiming them."""

from __future__ import annotations

import argparse
import json

from pmsq.cli._common import add_url, open_store, require_queue, routes_of

EXAMPLES = """\
Nothing is claimed, leased or changed: workers keep running undisturbed.
States: ready, scheduled (delay or retry backoff), waiting_for_key (behind an
earlier message of its key), in_flight; "#2" = delivered twice so far.

examples:
  pmsq peek pms.db calendar
  pmsq peek pms.db email -n 50 --tenant acme
  pmsq peek pms.db payments --json | jq '.[].payload'
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``peek`` subcommand."""
    p = sub.add_parser(
        "peek",
        help="show the next messages of a queue without claiming them",
        description="Show up to N waiting or in-flight messages of a queue, in delivery order.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_url(p)
    p.add_argument("queue", metavar="QUEUE", help="queue name")
    p.add_argument("-n", type=int, default=10, metavar="N", help="how many (default 10)")
    p.add_argument("--tenant", help="only this tenant's messages")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def _short(value: object, width: int) -> str:
    text = json.dumps(value, default=repr) if not isinstance(value, bytes) else repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def run(args: argparse.Namespace) -> int:
    """Print the messages."""
    from pmsq.cli._common import CommandError
    from pmsq.monitor.figures import fmt_age
    from pmsq.queue import Queue

    if args.n < 1:
        raise CommandError(f"-n takes a count >= 1, got {args.n}")
    with open_store(args.url, routes_of(args)) as broker:
        require_queue(broker, args.queue)
        # A plain handle: broker.queue() would declare the queue, peeking must not write.
        found = Queue(broker.runtime, args.queue, tenant=args.tenant).peek(args.n)
        now = broker.clock.time()
    if args.json:
        out = [
            {
                "id": m.id,
                "state": state,
                "key": m.key,
                "tenant": m.tenant,
                "priority": m.priority,
                "attempt": m.attempt,
                "enqueued_at": m.enqueued_at.isoformat(),
                "topic": m.topic,
                "headers": m.headers,
                "payload": m.payload if not isinstance(m.payload, bytes) else repr(m.payload),
            }
            for m, state in found
        ]
        print(json.dumps(out, indent=2))
        return 0
    import shutil
    import sys

    from pmsq.cli._columns import layout

    if not found:
        print(f"queue {args.queue!r} has no waiting or in-flight messages")
        return 0
    rows = [
        (
            m.id,
            state if m.attempt == 0 else f"{state} #{m.attempt}",
            m.key or "-",
            m.tenant or "-",
            fmt_age(max(0.0, now - m.enqueued_at.timestamp())),
            _short(m.payload, 200),
        )
        for m, state in found
    ]
    # The id is what trace and dlq show need: never cut. On a terminal the
    # payload moves under its id when the line would not fit; piped, each
    # message is one line, for grep (--json has the whole payload).
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    header = ("id", "state", "key", "tenant", "age", "payload")
    for line in layout(header, rows, width=width, right=(4,), shrink=(2, 3), tail_width=200):
        print(line)
    return 0
