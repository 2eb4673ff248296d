"""``pmsq dlq list|show|redrive|purge URL QUEUE [ID...]``: handle dead letters."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from pmsq.cli._common import (
    CommandError,
    add_url,
    confirm,
    nonneg_seconds,
    open_store,
    require_queue,
    routes_of,
)
from pmsq.message import DeadLetter

EXAMPLES = """\
Filters (--tenant, --key, --error, --older-than) narrow every action; IDs
name dead letters exactly. purge always asks for confirmation, redrive asks
when no ID is given; --yes answers for you, and without a terminal --yes is
required. A redriven message starts again at attempt 1.

examples:
  pmsq dlq list pms.db email
  pmsq dlq list pms.db email --error SMTPTimeout --older-than 3600 --json
  pmsq dlq show pms.db email 06H04HJWE0KEBT2J2JSY5F1Q4M
  pmsq dlq redrive pms.db email 06H04HJWE0KEBT2J2JSY5F1Q4M
  pmsq dlq redrive pms.db email --tenant acme    # all of acme's, after a yes
  pmsq dlq purge pms.db email --key property:4521 --yes
"""

_CHUNK = 500


class _IntermixedParser(argparse.ArgumentParser):
    """Accepts IDs after options too (``dlq purge URL Q --tenant acme ID1 ID2``).

    Plain argparse stops filling ``ID...`` at the first option and then
    rejects later IDs as unrecognized.
    """

    _inside = False

    def parse_known_args(  # type: ignore[override]
        self, args: Any = None, namespace: Any = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self._inside:
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``dlq`` subcommand and its actions."""
    p = sub.add_parser(
        "dlq",
        help="dead letters: list, show, redrive, purge",
        description="Inspect and handle a queue's dead letters.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = _IntermixedParser(add_help=False)
    add_url(common)
    common.add_argument("queue", metavar="QUEUE", help="queue name")
    common.add_argument("ids", nargs="*", metavar="ID", help="message ids (default: all matching)")
    common.add_argument("--tenant", help="only this tenant's dead letters")
    common.add_argument("--key", help="only dead letters of this key")
    common.add_argument(
        "--error", metavar="TEXT", help="only those whose reason or error contains TEXT"
    )
    common.add_argument(
        "--older-than", type=nonneg_seconds, metavar="S", help="only those dead for over S seconds"
    )
    actions = p.add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=_IntermixedParser
    )
    for name, text in (
        ("list", "list dead letters, oldest first"),
        ("show", "show dead letters in full: payload, reason, traceback"),
        ("redrive", "return dead letters to their queue (attempt 1)"),
        ("purge", "delete dead letters for good"),
    ):
        a = actions.add_parser(
            name,
            parents=[common],
            help=text,
            description=text[0].upper() + text[1:] + ".",
            epilog=EXAMPLES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if name in ("list", "show"):
            a.add_argument("--json", action="store_true", help="print JSON")
        if name == "list":
            a.add_argument(
                "-n", "--limit", type=int, default=50, metavar="N", help="show at most N (50)"
            )
        if name in ("redrive", "purge"):
            a.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=run)


def _matches(d: DeadLetter, args: argparse.Namespace, now: float) -> bool:
    if args.key is not None and d.message.key != args.key:
        return False
    if args.error is not None:
        needle = args.error.lower()
        hay = " ".join(x for x in (d.reason, d.error_type, d.traceback) if x).lower()
        if needle not in hay:
            return False
    return not (args.older_than is not None and now - d.dead_at.timestamp() <= args.older_than)


def _select(args: argparse.Namespace, dead: Any, now: float) -> list[DeadLetter]:
    ids: Sequence[str] | None = args.ids or None
    found = dead.list(ids=ids)
    if ids is not None:
        have = {d.message.id for d in found}
        missing = [i for i in ids if i not in have]
        if missing:
            scope = f" of tenant {args.tenant!r}" if args.tenant else ""
            raise CommandError(
                f"no dead letter {', '.join(missing)} in queue {args.queue!r}{scope}; "
                f"see pmsq dlq list {args.url} {args.queue}"
            )
    return [d for d in found if _matches(d, args, now)]


def _as_dict(d: DeadLetter, full: bool) -> dict[str, Any]:
    m = d.message
    out: dict[str, Any] = {
        "id": m.id,
        "tenant": m.tenant,
        "key": m.key,
        "topic": m.topic,
        "attempts": d.attempts,
        "dead_at": d.dead_at.isoformat(),
        "reason": d.reason,
        "error_type": d.error_type,
    }
    if full:
        out["payload"] = m.payload if not isinstance(m.payload, bytes) else repr(m.payload)
        out["headers"] = m.headers
        out["enqueued_at"] = m.enqueued_at.isoformat()
        out["correlation_id"] = m.correlation_id
        out["traceback"] = d.traceback
    return out


def _short_reason(reason: str) -> str:
    # "failed 3 of 3 attempts: ValueError: ..." -> "ValueError: ..." (tries has its column).
    text = " ".join(reason.split())
    if text.startswith(("failed ", "retried ")) and " attempts" in text:
        head, sep, rest = text.partition(": ")
        if sep and head.endswith("attempts"):
            return rest or text
    return text


def _list(args: argparse.Namespace, selected: list[DeadLetter], now: float) -> int:
    if args.limit < 1:
        raise CommandError(f"--limit takes a count >= 1, got {args.limit}")
    shown = selected[: args.limit]
    if args.json:
        print(json.dumps([_as_dict(d, False) for d in shown], indent=2))
        return 0
    import shutil

    from pmsq.cli._columns import layout
    from pmsq.monitor.figures import fmt_age

    if not selected:
        print(f"no matching dead letters in {args.queue!r}")
        return 0

    rows = [
        (
            d.message.id,
            d.message.tenant or "-",
            d.message.key or "-",
            str(d.attempts),
            fmt_age(max(0.0, now - d.dead_at.timestamp())),
            _short_reason(d.reason),
        )
        for d in shown
    ]
    header = ("id", "tenant", "key", "tries", "dead for", "reason")
    # On a terminal the lines fit it (the reason moves under its id when narrow);
    # piped, each dead letter is one whole line, for grep.
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    for line in layout(header, rows, width=width, right=(3, 4), shrink=(2, 1)):
        print(line)
    more = len(selected) - len(shown)
    print(
        f"{len(selected)} dead letter{'s' if len(selected) != 1 else ''}"
        + (f" ({more} not shown; raise --limit)" if more else "")
    )
    return 0


def _show(args: argparse.Namespace, selected: list[DeadLetter]) -> int:
    if not args.ids:
        raise CommandError("show needs one or more message ids; find them with pmsq dlq list")
    if args.json:
        print(json.dumps([_as_dict(d, True) for d in selected], indent=2))
        return 0
    from rich.console import Console
    from rich.text import Text

    console = Console(highlight=False, soft_wrap=True)
    for d in selected:
        data = _as_dict(d, True)
        console.print(Text(d.message.id, style="bold"))
        for field in (
            "tenant",
            "key",
            "topic",
            "attempts",
            "enqueued_at",
            "dead_at",
            "reason",
            "error_type",
            "correlation_id",
        ):
            console.print(f"  {field:<15}{data[field]}")
        console.print(f"  {'headers':<15}{json.dumps(data['headers'])}")
        console.print("  payload")
        for line in json.dumps(data["payload"], indent=2, default=repr).splitlines():
            console.print(f"    {line}")
        if d.traceback:
            console.print("  traceback")
            for line in d.traceback.splitlines():
                console.print(f"    {line}")
    return 0


def _chunks(ids: list[str]) -> list[list[str]]:
    return [ids[i : i + _CHUNK] for i in range(0, len(ids), _CHUNK)]


def run(args: argparse.Namespace) -> int:
    """Dispatch the dlq action."""
    with open_store(args.url, routes_of(args)) as broker:
        require_queue(broker, args.queue)
        dead = broker.tenant(args.tenant).dead_letters(args.queue) if args.tenant else None
        dead = dead or broker.dead_letters(args.queue)
        now = broker.clock.time()
        selected = _select(args, dead, now)
        if args.action == "list":
            return _list(args, selected, now)
        if args.action == "show":
            return _show(args, selected)
        if not selected:
            print(f"no matching dead letters in {args.queue!r}; nothing changed")
            return 0
        ids = [d.message.id for d in selected]
        verb = args.action
        what = f"{len(ids)} dead letter{'s' if len(ids) != 1 else ''} of {args.queue!r}"
        ask = verb == "purge" or not args.ids
        question = f"{verb} {what}" + (" (deleted for good)" if verb == "purge" else "") + "?"
        if ask and not confirm(question, yes=args.yes):
            print("nothing changed")
            return 1
        # The ids the operator confirmed, not "all": dead letters arriving meanwhile stay.
        fn = dead.purge if verb == "purge" else dead.redrive
        done = sum(fn(chunk) for chunk in _chunks(ids))
    past = "purged" if verb == "purge" else "redrove"
    print(f"{past} {done} dead letter{'s' if done != 1 else ''} of {args.queue!r}")
    return 0
