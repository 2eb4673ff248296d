"""``pmsq pause URL QUEUE [--tenant T] [--key K] [--for S] [--reason R]``: hold a scope."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re

from pmsq.cli._common import CommandError, add_url, open_store, require_queue

EXAMPLES = """\
A pause is stored, so every worker of every process obeys it: claims skip
the paused queue, tenant or key (a key pause holds only that key), puts are
still accepted, messages in flight finish normally, and nothing spends an
attempt while paused. Pausing a scope again replaces its until and reason.

examples:
  pmsq pause pms.db channel-sync --for 30m --reason "OTA maintenance"
  pmsq pause pms.db channel-sync --tenant acme --reason "expired credentials"
  pmsq pause pms.db calendar --tenant acme --key property:4521 --for 2h
  pmsq resume pms.db channel-sync
"""

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)\s*$")
#: A pause longer than this is almost certainly a typo (and ``until resumed`` exists).
_LONGEST = 366 * 86400.0


def duration(text: str) -> float:
    """An argparse type: ``90``, ``90s``, ``15m``, ``2h`` or ``1d`` as seconds > 0."""
    match = _DURATION.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 90, 90s, 15m, 2h or 1d, got {text!r}"
        )
    seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not (0 < seconds <= _LONGEST):
        raise argparse.ArgumentTypeError(
            f"expected a duration above 0 and at most a year, got {text!r} "
            "(leave out --for to pause until resumed)"
        )
    return seconds


def add_scope(parser: argparse.ArgumentParser, verb: str) -> None:
    """The ``QUEUE [--tenant T] [--key K]`` arguments of pause and resume."""
    parser.add_argument("queue", metavar="QUEUE", help="queue name")
    parser.add_argument("--tenant", help=f"{verb} only this tenant's messages")
    parser.add_argument("--key", help=f"{verb} only this key (of --tenant, if given)")


def describe_scope(queue: str, tenant: str | None, key: str | None) -> str:
    """``channel-sync``, ``channel-sync (tenant acme)``, ``... (tenant acme, key k)``."""
    extra = [f"tenant {tenant}" if tenant is not None else "", f"key {key}" if key else ""]
    inner = ", ".join(x for x in extra if x)
    return f"{queue} ({inner})" if inner else queue


def check_scope(args: argparse.Namespace) -> None:
    """Refuse empty ``--tenant``/``--key`` values, which name no scope."""
    for name in ("tenant", "key"):
        if getattr(args, name) == "":
            raise CommandError(f"--{name} takes a non-empty value")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``pause`` subcommand."""
    p = sub.add_parser(
        "pause",
        help="pause a queue, a tenant or a key (stored: every worker obeys)",
        description=(
            "Pause deliveries of a queue, of one tenant in it, or of one key, until "
            "resumed (pmsq resume) or for a while (--for)."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_url(p)
    add_scope(p, "pause")
    p.add_argument(
        "--for",
        dest="for_",
        type=duration,
        metavar="S",
        help="resume by itself after S (90, 90s, 15m, 2h, 1d); default: until resumed",
    )
    p.add_argument(
        "--reason", default="paused with pmsq pause", help="why (shown by monitor and pauses)"
    )
    p.add_argument("--json", action="store_true", help="print the stored pause as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Store the pause and say what it holds."""
    from pmsq.monitor.pauses import pauses_to_dicts

    check_scope(args)
    if not args.reason.strip():
        raise CommandError("--reason takes some text (it tells others why)")
    with open_store(args.url) as broker:
        require_queue(broker, args.queue)
        until = None if args.for_ is None else broker.clock.time() + args.for_
        broker.pause(args.queue, tenant=args.tenant, key=args.key, until=until, reason=args.reason)
        stored = [
            p
            for p in broker.pauses()
            if (p.queue, p.tenant, p.key) == (args.queue, args.tenant, args.key)
        ]
    if args.json:
        print(json.dumps(pauses_to_dicts(stored)[0] if stored else None))
        return 0
    scope = describe_scope(args.queue, args.tenant, args.key)
    if until is None:
        when = "until resumed (pmsq resume)"
    else:
        at = dt.datetime.fromtimestamp(until, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        when = f"until {at}"
    print(f"paused {scope} {when}: {args.reason}")
    return 0
