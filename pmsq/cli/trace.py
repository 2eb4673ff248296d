"""``pmsq trace URL ID``: the history of a message, a key, or a chain of messages."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import attrs

from pmsq.backends.base import HistoryEvent
from pmsq.cli._common import CommandError, add_url, open_store, routes_of

EXAMPLES = """\
The journal records every put, delivery and outcome in the same transaction
as the change itself; it keeps connect(history=...) worth of events (three
days by default; history=None keeps none).

examples:
  pmsq trace pms.db 06H3GMZZSDMPAE4A0X75448764      # a message id
  pmsq trace pms.db pay-1                           # or a dedup id
  pmsq trace pms.db --key property:4521 --queue calendar --tenant acme
  pmsq trace pms.db --correlation 06H3GMZZSDMPAE4A0X75448764   # the whole chain
  pmsq trace pms.db 06H3GMZZSDMPAE4A0X75448764 --json | jq '.messages[0].events'
  pmsq trace pms.db --pauses --queue channel-sync   # pauses, resumes, circuits
"""

# What a message's last event says about where it is now.
_STATE = {
    "put": "waiting",
    "delivered": "in flight",
    "acked": "acked",
    "retried": "waiting to retry",
    "lease_expired": "waiting (lease expired)",
    "dead_lettered": "dead",
    "released": "waiting",
    "redriven": "waiting (redriven)",
    "purged": "purged",
    "cancelled": "cancelled",
    "rescheduled": "waiting (rescheduled)",
    "expired": "dead (expired)",
    "snoozed": "snoozed",
    # Scope events (no message): what the scope's last one says.
    "paused": "paused",
    "resumed": "flowing",
    "circuit_opened": "circuit open",
    "circuit_closed": "flowing",
}
_STYLE = {
    "cancelled": "magenta",
    "rescheduled": "blue",
    "expired": "red",
    "snoozed": "blue",
    "paused": "yellow",
    "resumed": "green",
    "circuit_opened": "bold red",
    "circuit_closed": "green",
    "acked": "green",
    "retried": "yellow",
    "lease_expired": "yellow",
    "dead_lettered": "bold red",
    "purged": "red",
    "delivered": "cyan",
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``trace`` subcommand."""
    p = sub.add_parser(
        "trace",
        help="the history of a message, a key, or a chain of messages",
        description=(
            "Print the timeline of a message (by message id or dedup id), the recent history "
            "of a key, or the tree of messages one message caused (--correlation): when, "
            "what, where (worker and pid), how long each attempt took, and each error."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_url(p)
    p.add_argument("id", nargs="?", metavar="ID", help="a message id or a dedup id")
    p.add_argument("--key", help="the recent history of this key instead")
    p.add_argument("--queue", help="with --key or --pauses: only this queue")
    p.add_argument("--tenant", help="with --key or --pauses: only this tenant")
    p.add_argument("--correlation", metavar="ID", help="every message of this chain, as a tree")
    p.add_argument(
        "--pauses",
        action="store_true",
        help="pauses, resumes and circuit breaker events instead (with --queue, --tenant)",
    )
    p.add_argument(
        "--limit", type=int, default=1000, metavar="N", help="at most N events (default 1000)"
    )
    p.add_argument("--json", action="store_true", help="print JSON for tools")
    p.set_defaults(func=run)


@attrs.frozen
class MessageTrace:
    """One message's events, in order, and what they add up to."""

    id: str
    queue: str
    tenant: str | None
    key: str | None
    topic: str | None
    correlation_id: str | None
    causation_id: str | None
    events: tuple[HistoryEvent, ...]

    @property
    def state(self) -> str:
        for e in reversed(self.events):
            if e.event in _STATE:
                return _STATE[e.event]
        return "unknown"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "queue": self.queue,
            "tenant": self.tenant,
            "key": self.key,
            "topic": self.topic,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "state": self.state,
            "events": [_event_dict(e) for e in self.events],
        }


def _event_dict(e: HistoryEvent) -> dict[str, Any]:
    out = e.to_dict()
    for k in ("message_id", "queue", "tenant", "key", "correlation_id"):
        out.pop(k)
    out["at"] = _utc(e.at).isoformat()
    return out


def _utc(at: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(at, tz=dt.UTC)


def group(events: Sequence[HistoryEvent]) -> list[MessageTrace]:
    """Events by message, messages in the order of their first event."""
    by_id: dict[str, list[HistoryEvent]] = {}
    for e in events:
        # Scope events (pauses, circuits) have no message: one line of history per scope.
        mid = e.message_id or "\0".join(("", e.queue, e.tenant or "", e.key or ""))
        by_id.setdefault(mid, []).append(e)
    out = []
    for evs in by_id.values():
        first = evs[0]
        put = next((e for e in evs if e.event == "put"), None)
        detail = put.detail if put is not None else {}
        out.append(
            MessageTrace(
                id=first.message_id,
                queue=first.queue,
                tenant=first.tenant,
                key=first.key,
                topic=detail.get("topic"),
                correlation_id=first.correlation_id,
                causation_id=detail.get("causation_id"),
                events=tuple(evs),
            )
        )
    return out


def _find(broker: Any, args: argparse.Namespace) -> tuple[str, list[HistoryEvent]]:
    """``(what was asked, events)``; raises ``CommandError`` when nothing is known."""
    backend = broker.backend
    if not backend.capabilities.history:
        raise CommandError(
            f"the {backend.name} backend keeps no message history, so there is nothing to "
            "trace; pmsq trace needs a backend with the history capability (SQLite)"
        )
    limit = args.limit
    pauses = getattr(args, "pauses", False)
    if args.correlation is not None:
        events = backend.history(correlation_id=args.correlation, limit=limit)
        if not events:
            # Not the chain's first message: find the chain it belongs to.
            own = backend.history(message_id=args.correlation, limit=limit)
            chain = next((e.correlation_id for e in own if e.correlation_id), None)
            if chain is not None:
                events = backend.history(correlation_id=chain, limit=limit)
        what = f"correlation {args.correlation}"
    elif args.key is not None:
        events = backend.history(key=args.key, queue=args.queue, tenant=args.tenant, limit=limit)
        what = f"key {args.key!r}"
    elif pauses:
        # Scope events belong to no message: their message id is "".
        events = backend.history(message_id="", queue=args.queue, tenant=args.tenant, limit=limit)
        what = "pauses" + "".join(
            f" of {name} {value}"
            for name, value in (("queue", args.queue), ("tenant", args.tenant))
            if value is not None
        )
    else:
        events = backend.history(message_id=args.id, limit=limit)
        if not events:
            events = backend.history(dedup_id=args.id, limit=limit)
        what = f"message {args.id}"
    if not events and pauses:
        raise CommandError(
            f"no {what} in the journal: nothing was paused, resumed or tripped a circuit "
            "within the history kept (connect(history=...))"
        )
    if not events:
        raise CommandError(
            f"no history for {what} in this store: not a known message id, dedup id or key, "
            "or its history was pruned (connect(history=...)) or never kept (history=None)"
        )
    return what, events


def _check_args(args: argparse.Namespace) -> None:
    given = [x for x in (args.id, args.key, args.correlation, args.pauses or None) if x is not None]
    if len(given) != 1:
        raise CommandError("give exactly one of: ID, --key K, --correlation ID, --pauses")
    if (args.queue is not None or args.tenant is not None) and args.key is None and not args.pauses:
        raise CommandError("--queue and --tenant go with --key or --pauses")
    if args.limit < 1:
        raise CommandError(f"--limit takes a count >= 1, got {args.limit}")


def run(args: argparse.Namespace) -> int:
    """Print the timeline (or tree)."""
    _check_args(args)
    with open_store(args.url, routes_of(args)) as broker:
        what, events = _find(broker, args)
    messages = group(events)
    if args.json:
        query = {"id": args.id, "key": args.key, "correlation": args.correlation}
        if args.pauses:
            query.update(pauses=True, queue=args.queue, tenant=args.tenant)
        if args.key is not None:
            query.update(queue=args.queue, tenant=args.tenant)
        print(
            json.dumps(
                {
                    "query": {k: v for k, v in query.items() if v is not None},
                    "messages": [m.to_dict() for m in messages],
                },
                indent=2,
            )
        )
        return 0
    from rich.console import Console

    console = Console(highlight=False)
    for renderable in render(what, messages, tree=args.correlation is not None):
        console.print(renderable)
    return 0


# -- rendering -------------------------------------------------------------------------
def _where(e: HistoryEvent) -> str:
    """``worker-ab12cd@1234`` (worker id @ pid) for deliveries, ``pid 1234`` otherwise."""
    pid = (e.process or "").rpartition(":")[2]
    if e.worker:
        return f"{e.worker}@{pid}" if pid else e.worker
    return f"pid {pid}" if pid else "-"


def _took(e: HistoryEvent) -> str:
    """Handler time: ``6µs``, ``412µs``, ``4.2ms``, ``42ms``, ``1.5s``."""
    ms = e.detail.get("duration_ms")
    if ms is None:
        return ""
    # Most handlers of a PMS run in microseconds; "0.0ms" would say nothing about them.
    if ms < 0.001:
        return "<1µs"
    if ms < 1:
        return f"{ms * 1000:.0f}µs"
    if ms < 10:
        return f"{ms:.1f}ms"
    return f"{ms:.0f}ms" if ms < 10_000 else f"{ms / 1000:.1f}s"


def _error(e: HistoryEvent) -> str | None:
    """The event's error as ``Type: message``, the type named once."""
    d = e.detail
    if e.event == "circuit_opened":
        # "circuit open: <last error>": the error that tripped it.
        return str(d.get("reason") or "") or None
    text = str(d.get("error") or d.get("error_type") or "")
    kind = str(d.get("error_type") or "")
    if not text:
        return None
    # The worker stores ``str(exc)`` prefixed with the dotted type, or with the
    # bare class name for builtins: add the type only when neither is there.
    if kind and not text.startswith((kind, kind.rsplit(".", 1)[-1])):
        text = f"{kind}: {text}"
    return text


def describe(e: HistoryEvent) -> str:
    """One line of what an event says, besides the error."""
    d = e.detail
    if e.event == "operator":  # an action from the dashboard (pmsq.web.actions)
        return f"{d.get('action')} by {d.get('by')} ({d.get('via')})"
    if e.event == "put":
        parts = []
        if d.get("topic"):
            parts.append(f"topic {d['topic']}")
        if d.get("siblings"):
            parts.append(f"+{len(d['siblings'])} fan-out copies")
        if d.get("causation_id"):
            parts.append(f"caused by {d['causation_id']}")
        if d.get("dead_letter_of"):
            parts.append(f"dead letter of {d['dead_letter_of']}")
        if d.get("delay"):
            parts.append(f"delay {d['delay']:g}s")
        if d.get("dedup_id"):
            parts.append(f"dedup {d['dedup_id']}")
        return ", ".join(parts)
    if e.event == "retried":
        return f"again in {d.get('delay', 0):g}s"
    if e.event == "dead_lettered":
        reason = str(d.get("reason", ""))
        error = _error(e)
        if error and reason.endswith(error):
            # "failed 5 of 5 attempts: <error>": the error line below says the rest.
            reason = reason[: -len(error)].rstrip(": ")
        if d.get("fallback"):
            reason = f"{reason}; copied to the fallback queue as {d['fallback']}".lstrip("; ")
        return reason
    if e.event == "dedup_hit":
        return f"duplicate put ({d.get('dedup_id')}) not stored"
    if e.event == "coalesced":
        return "payload replaced by a newer put"
    if e.event == "redriven":
        return f"after {d.get('attempts', '?')} attempts"
    return _describe_control(e)


def _clock(at: Any, ref: float) -> str:
    """An epoch time as ``HH:MM:SS`` UTC, with its date when not the day of ``ref``."""
    try:
        when = _utc(float(at))
    except (TypeError, ValueError, OverflowError, OSError):
        return str(at)
    same_day = when.date() == _utc(ref).date()
    return when.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S")


#: What a ``cancelled`` event's ``state`` says the message was doing.
_CANCELLED_STATE = {
    "ready": "while waiting",
    "scheduled": "while delayed or waiting to retry",
    "in_flight": "while in flight (its holder's outcome is discarded)",
}


def _describe_control(e: HistoryEvent) -> str:
    """Message control events: cancel, reschedule, expiry, snooze, pauses and circuits."""
    d = e.detail
    if e.event == "cancelled":
        state = str(d.get("state") or "")
        return f"withdrawn {_CANCELLED_STATE.get(state, state)}".rstrip()
    if e.event == "rescheduled":
        if d.get("available_at") is not None:
            return f"now due at {_clock(d['available_at'], e.at)} UTC"
        return "due time moved"
    if e.event == "expired":
        if d.get("expires_at") is not None:
            return f"not delivered by {_clock(d['expires_at'], e.at)} UTC: dead letter"
        return "not delivered in time: dead letter"
    if e.event == "snoozed":
        delay = d.get("delay")
        again = f"again in {float(delay):g}s" if delay is not None else "again later"
        return f"{again}, attempt not spent"
    if e.event in ("paused", "resumed", "circuit_opened", "circuit_closed"):
        scope = [f"tenant {e.tenant}" if e.tenant else "", f"key {e.key}" if e.key else ""]
        parts = [", ".join(x for x in scope if x) or "whole queue"]
        if e.event == "paused" and d.get("until") is not None:
            parts.append(f"until {_clock(d['until'], e.at)} UTC")
        if e.event == "circuit_opened" and d.get("until") is not None:
            parts.append(f"probe at {_clock(d['until'], e.at)} UTC")
        if e.event == "circuit_closed" and d.get("probe"):
            parts.append(f"probe {d['probe']} succeeded")
        if e.event == "paused" and d.get("reason"):
            parts.append(str(d["reason"]))
        return "; ".join(parts)
    return ""


_HEADERS = ("time (UTC)", "event", "#", "where", "took")
_RIGHT = {2, 4}  # columns aligned right: the attempt and the handler time
_INDENT = 4


@attrs.frozen
class _Row:
    cells: tuple[str, str, str, str, str]
    style: str
    detail: str
    error: str | None


class Timeline:
    """One message's events as aligned lines, readable at 80 columns.

    The fixed columns (time, event, attempt, where, took) come first; the
    detail follows on the same line when it fits, else on an indented line
    below, and an error always gets an indented line of its own, wrapped at
    word boundaries: a narrow table column would break its words apart.
    """

    def __init__(self, message: MessageTrace) -> None:
        self.message = message
        self.rows = [self._row(e) for e in message.events]

    @staticmethod
    def _row(e: HistoryEvent) -> _Row:
        return _Row(
            cells=("", e.event, str(e.attempt) if e.attempt else "", _where(e), _took(e)),
            style=_STYLE.get(e.event, ""),
            detail=describe(e),
            error=_error(e),
        )

    def _title(self) -> Any:
        from rich.text import Text

        m = self.message
        extra = [
            f"key {m.key}" if m.key else None,
            f"tenant {m.tenant}" if m.tenant else None,
            m.state,
        ]
        title = Text(f"{m.queue} · {m.id or 'pauses and circuits'}", style="bold")
        title.append("  " + " · ".join(x for x in extra if x), style="dim")
        if m.events:
            title.append(f"\n{_utc(m.events[0].at).date().isoformat()}", style="dim")
        return title

    def _stamps(self) -> list[str]:
        out = []
        day = _utc(self.message.events[0].at).date() if self.message.events else None
        for e in self.message.events:
            when = _utc(e.at)
            stamp = when.strftime("%H:%M:%S.%f")[:-3]
            if when.date() != day:  # past midnight: say which day
                day = when.date()
                stamp = f"{day.isoformat()} {stamp}"
            out.append(stamp)
        return out

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.padding import Padding
        from rich.text import Text

        yield self._title()
        rows = [
            attrs.evolve(r, cells=(stamp, *r.cells[1:]))
            for r, stamp in zip(self.rows, self._stamps(), strict=True)
        ]
        widths = [max([len(h), *(len(r.cells[i]) for r in rows)]) for i, h in enumerate(_HEADERS)]

        def line(cells: Sequence[str]) -> str:
            parts = [
                c.rjust(w) if i in _RIGHT else c.ljust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            ]
            return "  ".join(parts)

        fixed = len(line(_HEADERS))
        room = options.max_width - fixed - 2
        yield Text(f"{line(_HEADERS)}  detail"[: options.max_width], style="bold")
        yield Text("─" * min(options.max_width, fixed + 2 + max(6, room)), style="dim")
        for r in rows:
            text = Text(line(r.cells))
            text.stylize(r.style, widths[0] + 2, widths[0] + 2 + len(r.cells[1]))
            below = []
            if r.detail and len(r.detail) <= room:
                text.append("  " + r.detail)
            elif r.detail:
                below.append(Text(r.detail))
            if r.error:
                below.append(Text(r.error, style="red"))
            yield Text(text.plain.rstrip(), spans=text.spans)
            for extra in below:
                yield Padding(extra, (0, 0, 0, _INDENT), expand=False)


def timeline(message: MessageTrace) -> Timeline:
    """A renderable of one message's events, readable at 80 columns."""
    return Timeline(message)


def _node_label(m: MessageTrace) -> Any:
    from rich.text import Text

    attempts = max((e.attempt or 0 for e in m.events), default=0)
    label = Text(f"{m.queue} ", style="bold")
    label.append(m.id, style="dim")
    style = {"acked": "green", "dead": "bold red", "purged": "red"}.get(m.state, "yellow")
    label.append(f"  {m.state}", style=style)
    if attempts:
        label.append(f" after {attempts} attempt{'s' if attempts != 1 else ''}")
    if m.topic:
        label.append(f"  ({m.topic})", style="dim")
    return label


def correlation_tree(messages: Sequence[MessageTrace]) -> Any:
    """A rich Tree of a chain: each message under the one whose handler put it."""
    from rich.text import Text
    from rich.tree import Tree

    by_id = {m.id: m for m in messages}
    children: dict[str | None, list[MessageTrace]] = {}
    for m in messages:
        parent = m.causation_id if m.causation_id in by_id else None
        children.setdefault(parent, []).append(m)
    root_id = messages[0].correlation_id if messages else None
    tree = Tree(Text(f"correlation {root_id}", style="bold"))

    def add(node: Any, m: MessageTrace) -> None:
        branch = node.add(_node_label(m))
        for e in m.events:
            error = _error(e)
            if error and e.event in ("retried", "dead_lettered", "lease_expired"):
                branch.add(Text(f"attempt {e.attempt}: {error}", style="red"))
        for child in children.get(m.id, []):
            add(branch, child)

    for m in children.get(None, []):
        add(tree, m)
    return tree


def render(what: str, messages: Sequence[MessageTrace], *, tree: bool = False) -> list[Any]:
    """The renderables ``pmsq trace`` prints: a chain's tree, then each message's timeline."""
    out: list[Any] = []
    if tree:
        out.append(correlation_tree(messages))
    out.extend(timeline(m) for m in messages)
    return out
