"""Schedules for operators: the late-schedule alert and the monitor's schedule table.

Pure apart from :func:`read_schedules`: ``pmsq monitor``, ``pmsq stats`` and
``broker.check_alerts()`` read the schedules once and pass them here with
the time, like ``Stats`` snapshots go to ``pmsq.alerts.evaluate``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pmsq.alerts import Alert
from pmsq.backends.schedule_family import ScheduleStore
from pmsq.errors import PmsqError
from pmsq.schedules.schedule import Schedule
from pmsq.schedules.service import list_schedules

if TYPE_CHECKING:
    from rich.console import RenderableType

    from pmsq.runtime import Runtime

__all__ = [
    "LATE_AFTER",
    "METRIC_PREFIX",
    "fmt_lag",
    "lag",
    "read_schedules",
    "render_schedules",
    "schedule_alerts",
    "schedule_lines",
    "schedule_section",
    "schedules_prometheus",
    "schedules_to_dicts",
]

#: A schedule whose next slot is overdue by more than this many seconds raises
#: a warning: no worker of the store fired it (none runs, or the store is stuck).
#: Workers re-read the store every second, so on-time firing stays far below it.
LATE_AFTER = 60.0
#: ``Alert.metric`` of a late schedule is this prefix plus the schedule's name.
METRIC_PREFIX = "schedule:"


def read_schedules(runtime: Runtime) -> list[Schedule]:
    """The store's schedules, or none when its backend has no schedules or cannot be read."""
    if not isinstance(runtime.backend, ScheduleStore):
        return []
    try:
        return list_schedules(runtime, tenant=None, all_tenants=True)
    except PmsqError:
        return []


def lag(s: Schedule, now: dt.datetime) -> float | None:
    """How late the schedule runs: seconds overdue now, else its last firing's lag."""
    overdue = s.overdue(now)
    return overdue if overdue > 0 else s.lag


def schedule_alerts(
    schedules: Sequence[Schedule], now: float, *, late_after: float = LATE_AFTER
) -> list[Alert]:
    """A warning per schedule whose next slot is more than ``late_after`` seconds overdue."""
    out = []
    for s in schedules:
        overdue = s.overdue(now)
        if not s.paused and overdue > late_after:
            out.append(
                Alert(s.queue, s.tenant, METRIC_PREFIX + s.name, "warning", overdue, late_after)
            )
    return out


def schedules_to_dicts(schedules: Sequence[Schedule], now: float) -> list[dict[str, Any]]:
    """JSON-ready rows (``pmsq stats --json``, ``pmsq schedules --json``)."""
    at = dt.datetime.fromtimestamp(now, dt.UTC)
    return [
        {
            "name": s.name,
            "tenant": s.tenant,
            "queue": s.queue,
            "cron": s.cron,
            "every": s.every,
            "tz": s.tz,
            "catch_up": s.catch_up,
            "next_at": None if s.next_at is None else s.next_at.isoformat(),
            "last_at": None if s.last_at is None else s.last_at.isoformat(),
            "lag": lag(s, at),
            "paused": s.paused,
        }
        for s in schedules
    ]


def _when(t: dt.datetime | None) -> str:
    return "-" if t is None else t.strftime("%m-%d %H:%M:%S")


def fmt_lag(value: float | None) -> str:
    """A lag for a table cell: ``0.3s``, ``12m`` or ``-``."""
    if value is None:
        return "-"
    return f"{value:.1f}s" if value < 120 else f"{value / 60:.0f}m"


def render_schedules(
    schedules: Sequence[Schedule], now: float, *, late_after: float = LATE_AFTER
) -> RenderableType:
    """The schedule table: name, queue, when, next and last slot (UTC), lag."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    at = dt.datetime.fromtimestamp(now, dt.UTC)
    table = Table(
        box=box.SIMPLE_HEAD,
        padding=0,
        pad_edge=False,
        show_edge=False,
        header_style="bold",
        expand=False,
    )
    table.add_column("schedule", overflow="fold", min_width=16)
    for column in ("queue", "when", "next (UTC)", "last (UTC)"):
        table.add_column(column, overflow="fold")
    table.add_column("lag", justify="right", no_wrap=True)
    for s in schedules:
        late = s.overdue(now) > late_after
        table.add_row(
            s.name if s.tenant is None else f"{s.tenant}/{s.name}",
            s.queue,
            s.timing if s.cron is None or s.tz == "UTC" else f"{s.cron}\n{s.tz}",
            _when(s.next_at),
            _when(s.last_at),
            Text(fmt_lag(lag(s, at)), style="yellow" if late else ""),
        )
    return table


def schedule_section(schedules: Sequence[Schedule], now: float) -> RenderableType:
    """The monitor's schedule part: the table, and a line per late schedule."""
    from rich.console import Group

    from pmsq.monitor.render import render_alerts

    parts: list[RenderableType] = [render_schedules(schedules, now)]
    late = schedule_alerts(schedules, now)
    if late:
        parts.append(render_alerts(late))
    return Group(*parts)


def schedule_lines(schedules: Sequence[Schedule], now: float) -> str:
    """Plain lines for the monitor without a terminal (empty without schedules)."""
    at = dt.datetime.fromtimestamp(now, dt.UTC)
    return "".join(
        f"\nschedule {s.name if s.tenant is None else f'{s.tenant}/{s.name}'} -> {s.queue}: "
        f"next {_when(s.next_at)}, last {_when(s.last_at)}, lag {fmt_lag(lag(s, at))}"
        for s in schedules
    )


def _prom_labels(s: Schedule) -> str:
    pairs = [("schedule", s.name), ("queue", s.queue), ("tenant", s.tenant or "")]
    esc = [(k, v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')) for k, v in pairs]
    return "{" + ",".join(f'{k}="{v}"' for k, v in esc) + "}"


def schedules_prometheus(schedules: Sequence[Schedule], now: float) -> str:
    """Schedule gauges in the Prometheus text format (appended to ``pmsq stats --prometheus``).

    ``pmsq_schedule_overdue_seconds`` (how far past due the next slot is; 0 when
    on time), ``pmsq_schedule_lag_seconds`` (how late the last slot fired) and
    ``pmsq_schedule_next_timestamp_seconds``. Empty without schedules.
    """
    if not schedules:
        return ""
    families = (
        ("pmsq_schedule_overdue_seconds", "Seconds the next slot is past due.", _overdue),
        ("pmsq_schedule_lag_seconds", "Seconds the last slot fired after it was due.", _last_lag),
        ("pmsq_schedule_next_timestamp_seconds", "When the next slot is due.", _next_at),
    )
    lines: list[str] = []
    for name, text, get in families:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge"]
        for s in schedules:
            value = get(s, now)
            if value is not None:
                lines.append(f"{name}{_prom_labels(s)} {value!r}")
    return "\n".join(lines) + "\n"


def _overdue(s: Schedule, now: float) -> float | None:
    """Prometheus getter: seconds overdue."""
    return s.overdue(now)


def _last_lag(s: Schedule, now: float) -> float | None:
    """Prometheus getter: the last firing's lag."""
    return s.lag


def _next_at(s: Schedule, now: float) -> float | None:
    """Prometheus getter: the next slot as epoch seconds."""
    return None if s.next_at is None else s.next_at.timestamp()
