"""Figures the monitor shows, computed from snapshots: pure and free of rich.

Throughput comes from the difference between two snapshots' all-time totals
divided by the time between them (about five seconds apart, see ``Tracker``);
with no previous snapshot the last minute's counts stand in. The failure rate
is the last minute's ``failed / (processed + failed)``, the figure alert rules
use too, so a red cell and an alert always agree.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence

import attrs

from pmsq.alerts import Alert, failure_rate
from pmsq.stats import QueueStats, Stats

__all__ = [
    "Row",
    "Tracker",
    "fmt_age",
    "fmt_count",
    "fmt_ms",
    "fmt_pct",
    "fmt_rate",
    "plain_text",
    "rows",
    "sparkline",
]

_BARS = "▁▂▃▄▅▆▇█"


@attrs.frozen
class Row:
    """One line of the dashboard: a queue, or one tenant's share of it.

    Attributes:
        queue: Queue name.
        tenant: ``None`` for the queue's own line.
        stats: The figures of this line.
        processed_per_s: Acks per second since the previous snapshot.
        failed_per_s: Failed deliveries per second since the previous snapshot.
        failure_rate: Failed share of finished deliveries over the last minute.
        alerts: Alerts raised on this line.
    """

    queue: str
    tenant: str | None
    stats: QueueStats
    processed_per_s: float
    failed_per_s: float
    failure_rate: float | None
    alerts: tuple[Alert, ...] = ()

    @property
    def level(self) -> str:
        """``"critical"``, ``"warning"`` or ``"ok"``."""
        levels = {a.level for a in self.alerts}
        return "critical" if "critical" in levels else "warning" if levels else "ok"

    def flagged(self, metric: str) -> str | None:
        """The level of the alert on ``metric`` in this line, if any."""
        for a in self.alerts:
            if a.metric == metric:
                return a.level
        return None


def _rates(
    current: QueueStats, previous: QueueStats | None, seconds: float | None
) -> tuple[float, float]:
    if previous is None or seconds is None or seconds <= 0:
        return current.processed_per_minute / 60.0, current.failed_per_minute / 60.0
    # Totals only grow; a dropped and re-created queue must not show negative rates.
    done = max(0, current.processed - previous.processed) / seconds
    failed = max(0, current.failed - previous.failed) / seconds
    return done, failed


def rows(
    stats: Stats,
    previous: Stats | None,
    alerts: Iterable[Alert] = (),
    *,
    tenants: bool = False,
) -> list[Row]:
    """The dashboard's lines, in queue order (each queue followed by its tenants).

    Args:
        stats: The current snapshot.
        previous: The snapshot before it (for rates), or ``None``.
        alerts: Alerts evaluated on ``stats``.
        tenants: Add a line per tenant under each queue.
    """
    seconds = None
    if previous is not None:
        seconds = (stats.taken_at - previous.taken_at).total_seconds()
    by_line: dict[tuple[str, str | None], list[Alert]] = {}
    for a in alerts:
        by_line.setdefault((a.queue, a.tenant), []).append(a)
    out: list[Row] = []
    for name in sorted(stats.queues):
        qs = stats.queues[name]
        prev = previous.queues.get(name) if previous is not None else None
        done, failed = _rates(qs, prev, seconds)
        out.append(
            Row(
                name, None, qs, done, failed, failure_rate(qs), tuple(by_line.get((name, None), ()))
            )
        )
        if not tenants:
            continue
        for tenant in sorted(qs.tenants):
            ts = qs.tenants[tenant]
            prev_t = prev.tenants.get(tenant) if prev is not None else None
            done, failed = _rates(ts, prev_t, seconds if prev is not None else None)
            out.append(
                Row(
                    name,
                    tenant,
                    ts,
                    done,
                    failed,
                    failure_rate(ts),
                    tuple(by_line.get((name, tenant), ())),
                )
            )
    return out


class Tracker:
    """Keeps recent snapshots: the one rates are measured against, and throughput history.

    Writers record outcome counts about once a second, so rates between two
    snapshots a fraction of a second apart would jump between 0 and bursts.
    ``previous`` is therefore the newest snapshot at least ``window`` seconds
    older than the current one (or the oldest kept while the monitor is young).

    Args:
        samples: Throughput values kept per queue for the sparkline.
        window: Seconds over which rates are measured.
    """

    def __init__(self, samples: int = 20, window: float = 5.0) -> None:
        self.current: Stats | None = None
        self.history: dict[str, deque[float]] = {}
        self._snapshots: deque[Stats] = deque()
        self._samples = samples
        self._window = window

    @property
    def previous(self) -> Stats | None:
        """The snapshot rates are measured against, or ``None`` with only one taken."""
        return self._snapshots[0] if len(self._snapshots) > 1 else None

    def update(self, stats: Stats) -> None:
        """Record a new snapshot."""
        self.current = stats
        snaps = self._snapshots
        snaps.append(stats)
        while (
            len(snaps) > 2 and (stats.taken_at - snaps[1].taken_at).total_seconds() >= self._window
        ):
            snaps.popleft()
        for row in rows(stats, self.previous):
            self.history.setdefault(row.queue, deque(maxlen=self._samples)).append(
                row.processed_per_s
            )


def sparkline(values: Sequence[float], width: int = 10, top: float | None = None) -> str:
    """The last ``width`` values as unicode bars.

    Args:
        values: The series, oldest first.
        width: How many of the last values to draw.
        top: The value drawn as a full bar (larger ones are full too);
            default: the largest of the values drawn.
    """
    tail = list(values)[-width:]
    if not tail:
        return ""
    top = max(tail) if top is None else top
    if top <= 0:
        return _BARS[0] * len(tail)
    return "".join(_BARS[min(len(_BARS) - 1, round(v / top * (len(_BARS) - 1)))] for v in tail)


def fmt_age(seconds: float | None) -> str:
    """``0.4s``, ``42s``, ``3m04s``, ``2h05m``, ``3d04h``; ``-`` for ``None``."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def fmt_count(n: int) -> str:
    """``999``, ``12.3k``, ``4.5M``: counts that fit a narrow column."""
    if n < 10_000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1000:.1f}k"
    return f"{n / 1_000_000:.1f}M"


def fmt_rate(per_s: float) -> str:
    """Per-second rate: ``0``, ``0.3``, ``12.5``, ``340``."""
    if per_s <= 0:
        return "0"
    if per_s < 100:
        return f"{per_s:.1f}"
    if per_s < 10_000:
        return f"{per_s:.0f}"
    return f"{per_s / 1000:.1f}k"


def fmt_pct(rate: float | None) -> str:
    """A 0..1 fraction as a percentage; ``-`` when unknown."""
    if rate is None:
        return "-"
    return f"{rate * 100:.0f}%" if rate >= 0.01 or rate == 0 else "<1%"


def fmt_ms(ms: float | None) -> str:
    """Milliseconds: ``0.4ms``, ``12ms``, ``1.2s``; ``-`` when unknown."""
    if ms is None:
        return "-"
    if ms < 10:
        return f"{ms:.1f}ms"
    if ms < 1000:
        return f"{ms:.0f}ms"
    return f"{ms / 1000:.1f}s"


def plain_text(
    stats: Stats,
    previous: Stats | None,
    alerts: Sequence[Alert],
    *,
    tenants: bool = False,
    source: str = "",
) -> str:
    """The snapshot as plain lines, for logs and pipes (no colours, one line per queue)."""
    stamp = stats.taken_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [f"pmsq {stamp} {source}".rstrip()]
    for r in rows(stats, previous, alerts, tenants=tenants):
        s = r.stats
        name = r.queue if r.tenant is None else f"{r.queue}[{r.tenant}]"
        mark = {"critical": " ALERT", "warning": " WARN"}.get(r.level, "")
        lines.append(
            f"{name} ready={s.ready} delayed={s.delayed} in_flight={s.in_flight} "
            f"dead={s.dead} oldest={fmt_age(s.oldest_age)} "
            f"processed/s={fmt_rate(r.processed_per_s)} failed/s={fmt_rate(r.failed_per_s)} "
            f"fail={fmt_pct(r.failure_rate)} p50={fmt_ms(s.p50_ms)} "
            f"p95={fmt_ms(s.p95_ms)} consumers={'-' if s.consumers is None else s.consumers}"
            f"{mark}"
        )
    if not stats.queues:
        lines.append("(no queues)")
    lines.extend(f"{a.level.upper()}: {a.message}" for a in alerts)
    return "\n".join(lines)


def queue_history(tracker: Tracker) -> Mapping[str, Sequence[float]]:
    """The tracker's throughput samples by queue (for ``render``)."""
    return {k: list(v) for k, v in tracker.history.items()}
