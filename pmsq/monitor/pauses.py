"""Paused scopes and open circuits: the monitor's panel and ``pmsq pauses``.

Rendering of ``broker.pauses()`` (``pmsq.Pause`` values) at a given time,
without store access (tests render it into a recording console), and
:func:`read_pauses`, the one read the monitor makes. A pause
whose reason starts with ``circuit open:`` was stored by a circuit breaker
(``declare_queue(circuit=...)``); it is shown as an open circuit with the
time it probes again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from pmsq.monitor.figures import fmt_age

__all__ = [
    "CIRCUIT_PREFIX",
    "is_circuit",
    "pause_lines",
    "pause_section",
    "pause_table",
    "pauses_to_dicts",
    "read_pauses",
    "scope_of",
]

#: How a circuit breaker's pause reason begins.
CIRCUIT_PREFIX = "circuit open:"


def read_pauses(broker: Any) -> list[Any]:
    """``broker.pauses()``, or nothing for a store that cannot pause (no ``control``).

    Raises:
        PmsqError: the store could not be read (the monitor shows it and carries on).
    """
    from pmsq.errors import ConfigurationError

    try:
        return list(broker.pauses())
    except ConfigurationError:
        return []


def is_circuit(pause: Any) -> bool:
    """Whether ``pause`` was stored by a circuit breaker rather than an operator."""
    flag = getattr(pause, "circuit", None)
    if isinstance(flag, bool):
        return flag
    return str(pause.reason or "").startswith(CIRCUIT_PREFIX)


def scope_of(pause: Any) -> str:
    """``queue``, ``queue · tenant acme`` or ``queue · tenant acme · key k``."""
    parts = [pause.queue]
    if pause.tenant is not None:
        parts.append(f"tenant {pause.tenant}")
    if pause.key is not None:
        parts.append(f"key {pause.key}")
    return " · ".join(parts)


def _epoch(when: dt.datetime | float | None) -> float | None:
    if when is None:
        return None
    if isinstance(when, dt.datetime):
        return when.timestamp()
    return float(when)


def _until(pause: Any, now: float) -> str:
    until = _epoch(pause.until)
    if until is None:
        return "until resumed"
    left = until - now
    if is_circuit(pause):
        # Past its time an open circuit waits for one message to probe with.
        return f"probes in {fmt_age(left)}" if left > 0 else "probe due: the next message"
    return f"resumes in {fmt_age(max(0.0, left))}"


def _since(pause: Any, now: float) -> str:
    since = _epoch(pause.since)
    return "" if since is None else f"{fmt_age(max(0.0, now - since))} ago"


def _ordered(pauses: Sequence[Any]) -> list[Any]:
    # Open circuits first (nobody chose them), then by scope.
    return sorted(
        pauses,
        key=lambda p: (not is_circuit(p), p.queue, p.tenant or "", p.key or ""),
    )


def pause_table(pauses: Sequence[Any], now: float) -> Table:
    """Two lines per pause: kind, scope and times; then why, indented under the scope.

    A grid rather than a table of columns: scopes and reasons are long, and
    at 80 columns a column each would cut both.
    """
    grid = Table.grid(padding=(0, 2, 0, 0))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for p in _ordered(pauses):
        circuit = is_circuit(p)
        reason = str(p.reason or "")
        if circuit:
            reason = reason[len(CIRCUIT_PREFIX) :].strip() or reason
        text = Text(scope_of(p), style="bold")
        times = [_until(p, now), f"since {_since(p, now)}" if _since(p, now) else ""]
        text.append("  " + ", ".join(t for t in times if t), style="dim")
        text.append("\n" + reason)
        kind = Text("circuit open", style="bold red") if circuit else Text("paused", style="yellow")
        grid.add_row(kind, text)
    return grid


def pause_section(pauses: Sequence[Any], now: float) -> RenderableType:
    """The monitor's panel: a title line and the table (nothing to say when empty)."""
    circuits = sum(is_circuit(p) for p in pauses)
    held = len(pauses) - circuits
    title = Text("paused: ", style="bold")
    parts = []
    if held:
        parts.append(f"{held} scope{'s' if held != 1 else ''} paused")
    if circuits:
        parts.append(f"{circuits} circuit{'s' if circuits != 1 else ''} open")
    title.append(", ".join(parts), style="bold red" if circuits else "yellow")
    title.append("  (pmsq resume lifts one)", style="dim")
    return Group(title, pause_table(pauses, now))


def pause_lines(pauses: Sequence[Any], now: float) -> str:
    """Plain lines for a monitor without a terminal (empty when nothing is paused)."""
    out = []
    for p in _ordered(pauses):
        kind = "circuit open" if is_circuit(p) else "paused"
        since = _since(p, now)
        line = f"{kind}: {scope_of(p)}, {_until(p, now)}"
        if since:
            line += f", since {since}"
        out.append(f"{line}: {p.reason}")
    return "".join(f"\n{line}" for line in out)


def pauses_to_dicts(pauses: Sequence[Any]) -> list[dict[str, Any]]:
    """JSON-ready pauses (times as ISO 8601 UTC)."""

    def iso(when: dt.datetime | float | None) -> str | None:
        epoch = _epoch(when)
        return None if epoch is None else dt.datetime.fromtimestamp(epoch, tz=dt.UTC).isoformat()

    return [
        {
            "queue": p.queue,
            "tenant": p.tenant,
            "key": p.key,
            "circuit": is_circuit(p),
            "reason": p.reason,
            "since": iso(p.since),
            "until": iso(p.until),
        }
        for p in _ordered(pauses)
    ]
