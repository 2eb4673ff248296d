"""``render``: a ``Stats`` snapshot (and the one before) as a rich renderable.

Pure: no store access, no clock, no terminal. ``pmsq monitor`` calls it every
refresh, ``pmsq stats`` once, and the tests render it into a recording
console of fixed width. Below 100 columns the trend column is left out and
the latency columns merge, so the table fits 80 columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from pmsq.alerts import Alert, AlertRule, evaluate
from pmsq.monitor.figures import (
    Row,
    fmt_age,
    fmt_count,
    fmt_ms,
    fmt_pct,
    fmt_rate,
    rows,
    sparkline,
)
from pmsq.stats import Stats

__all__ = ["LEVEL_STYLES", "render", "render_alerts"]

#: Colours of alert levels (also used by ``pmsq doctor`` and ``pmsq stats``).
LEVEL_STYLES = {"critical": "bold red", "warning": "yellow", "ok": ""}
_WIDE = 100
_TREND_WIDTH = 10
# Every trend bar shares one scale: the busiest queue's peak, and at least this
# many messages per second, so that a queue doing 0.2 msg/s looks nearly idle
# instead of filling its bar as it would if each row were scaled to itself.
TREND_FLOOR = 5.0


def _cell(text: str, level: str | None, dim: bool = False) -> Text:
    style = LEVEL_STYLES.get(level or "ok", "")
    if dim and not style:
        style = "dim"
    return Text(text, style=style)


def trend_top(history: Mapping[str, Sequence[float]] | None) -> float:
    """The throughput drawn as a full trend bar: the highest shown, at least ``TREND_FLOOR``."""
    shown = [v for series in (history or {}).values() for v in list(series)[-_TREND_WIDTH:]]
    return max([TREND_FLOOR, *shown])


def _row_cells(
    row: Row, wide: bool, history: Sequence[float] | None, top: float = TREND_FLOOR
) -> list[Text]:
    s = row.stats
    dim = row.tenant is not None
    name = row.queue if row.tenant is None else f" └ {row.tenant}"
    depth = row.flagged("depth")
    cells = [
        Text(name, style=LEVEL_STYLES[row.level] or ("dim" if dim else "bold")),
        _cell(fmt_count(s.ready), depth, dim),
        _cell(fmt_count(s.delayed), depth, dim),
        _cell(fmt_count(s.in_flight), depth, dim),
        _cell("-" if s.consumers is None else str(s.consumers), row.flagged("consumers"), dim),
        _cell(fmt_count(s.dead), row.flagged("dead"), dim),
        _cell(fmt_age(s.oldest_age), row.flagged("oldest_age"), dim),
        _cell(fmt_rate(row.processed_per_s), None, dim),
        _cell(fmt_rate(row.failed_per_s), None, dim),
        _cell(fmt_pct(row.failure_rate), row.flagged("failure_rate"), dim),
    ]
    if wide:
        cells += [_cell(fmt_ms(s.p50_ms), None, dim), _cell(fmt_ms(s.p95_ms), None, dim)]
        cells.append(Text(sparkline(history or (), _TREND_WIDTH, top=top), style="cyan"))
    else:
        cells.append(_cell(f"{fmt_ms(s.p50_ms)}/{fmt_ms(s.p95_ms)}", None, dim))
    return cells


def render_alerts(alerts: Sequence[Alert]) -> Text:
    """The alert lines under the table (or a quiet "no alerts")."""
    if not alerts:
        return Text("no alerts", style="green")
    text = Text()
    for i, a in enumerate(alerts):
        if i:
            text.append("\n")
        text.append(f"● {a.message}", style=LEVEL_STYLES[a.level])
    return text


def render(
    stats: Stats,
    previous: Stats | None,
    rules: Mapping[str, AlertRule],
    width: int,
    *,
    history: Mapping[str, Sequence[float]] | None = None,
    tenants: bool = False,
    title: str = "pmsq",
    extra_alerts: Sequence[Alert] = (),
) -> RenderableType:
    """The dashboard for one snapshot.

    Args:
        stats: The current snapshot.
        previous: The snapshot before (throughput is the difference of their
            totals over the time between them), or ``None``.
        rules: Stored alert rules by queue (queues without one get the defaults).
        width: Columns available; below 100 the layout is compact.
        history: Recent processed/s per queue, for the trend sparkline.
        tenants: Add a line per tenant under each queue.
        title: The header's first words (the command and the store).
        extra_alerts: Alerts the figures alone do not show (pauses, open circuits).

    Returns:
        A renderable: header, the queue table, the alert lines.
    """
    wide = width >= _WIDE
    top = trend_top(history)
    alerts = evaluate(stats, rules, tenants=tenants) + list(extra_alerts)
    lines = rows(stats, previous, alerts, tenants=tenants)
    critical = sum(a.level == "critical" for a in alerts)
    header = Text(f"{title}  ", style="bold")
    header.append(stats.taken_at.strftime("%H:%M:%S UTC"), style="dim")
    header.append(f"  {len(stats.queues)} queue{'s' if len(stats.queues) != 1 else ''}")
    if alerts:
        header.append(
            f"  {len(alerts)} alert{'s' if len(alerts) != 1 else ''}",
            style=LEVEL_STYLES["critical" if critical else "warning"],
        )
    table = Table(
        box=box.SIMPLE_HEAD,
        # One space between columns (the box's own separator) keeps 80 columns readable.
        padding=0,
        pad_edge=False,
        show_edge=False,
        header_style="bold",
        expand=False,
    )
    table.add_column("queue", no_wrap=True, overflow="ellipsis", max_width=24 if wide else 16)
    headers = (
        ["ready", "delayed", "in flight", "wk", "dead", "oldest", "done/s", "fail/s", "fail%"]
        if wide
        else ["ready", "delay", "infl", "wk", "dead", "oldest", "done/s", "fail/s", "fail%"]
    )
    for h in headers:
        table.add_column(h, justify="right", no_wrap=True)
    if wide:
        table.add_column("p50", justify="right", no_wrap=True)
        table.add_column("p95", justify="right", no_wrap=True)
        # The header names the shared scale: a full bar is this many acks per second.
        table.add_column(f"trend ≤{fmt_rate(top)}/s", no_wrap=True, min_width=_TREND_WIDTH)
    else:
        table.add_column("p50/p95", justify="right", no_wrap=True)
    for row in lines:
        series = history.get(row.queue) if history is not None and row.tenant is None else None
        table.add_row(*_row_cells(row, wide, series, top))
    parts: list[RenderableType] = [header]
    if stats.queues:
        parts.append(table)
    else:
        parts.append(Text("no queues in this store yet", style="dim"))
    parts.append(render_alerts(alerts))
    return Group(*parts)
