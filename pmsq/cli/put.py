"""``pmsq put URL QUEUE JSON``: put one message from the shell and print its id."""

from __future__ import annotations

import argparse

from pmsq.cli._common import (
    add_url,
    nonneg_seconds,
    open_store,
    parse_json,
    require_queue,
    routes_of,
)

EXAMPLES = """\
The queue must exist (declared by the app, or already used); the payload is
JSON: quote it for the shell, or pass - to read it from standard input.

examples:
  pmsq put pms.db calendar '{"event": "resync"}' --key property:4521
  pmsq put pms.db email '{"to": "guest@example.com"}' --tenant acme --delay 60
  echo '{"booking_id": 7}' | pmsq put pms.db payments - --dedup-id pay-7
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``put`` subcommand."""
    p = sub.add_parser(
        "put",
        help="put one JSON message into a queue; prints its id",
        description="Put one message into an existing queue, durably, and print its id.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_url(p)
    p.add_argument("queue", metavar="QUEUE", help="queue name")
    p.add_argument("payload", metavar="JSON", help="the payload as JSON, or - for stdin")
    p.add_argument("--key", help="ordering key (e.g. property:4521)")
    p.add_argument("--tenant", help="tenant id")
    p.add_argument(
        "--delay", type=nonneg_seconds, default=0.0, metavar="S", help="hold back S seconds"
    )
    p.add_argument("--priority", type=int, default=0, help="higher is delivered first")
    p.add_argument("--dedup-id", help="a repeat within the dedup window returns the first id")
    p.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a string header (repeatable)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Put the message and print its id."""
    from pmsq.cli._common import CommandError

    payload = parse_json(args.payload)
    headers: dict[str, str] = {}
    for item in args.header:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CommandError(f"--header takes NAME=VALUE, got {item!r}")
        headers[name] = value
    with open_store(args.url, routes_of(args)) as broker:
        require_queue(broker, args.queue)
        mid = broker.queue(args.queue).put(
            payload,
            key=args.key,
            tenant=args.tenant,
            delay=args.delay,
            priority=args.priority,
            dedup_id=args.dedup_id,
            headers=headers or None,
        )
    print(mid)
    return 0
