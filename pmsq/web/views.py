"""What each dashboard page shows, read from the broker: plain data, no HTTP.

Every function takes the broker and the tenant the viewer is limited to
(``None``: all), and reads through a tenant handle when there is one, so a
tenant's token never sees another tenant's figures, dead letters or history.
These functions block (they read the store): the routes run them in threads.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs

from pmsq.alerts import Alert, failure_rate
from pmsq.backends.families import History
from pmsq.message import DeadLetter
from pmsq.monitor.exposition import Report, report
from pmsq.stats import QueueStats
from pmsq.web.series import Series, read_series

if TYPE_CHECKING:
    from pmsq.broker import Broker
    from pmsq.cli.trace import MessageTrace

__all__ = [
    "Line",
    "Overview",
    "QueuePage",
    "can_pause",
    "overview",
    "pauses",
    "queue_page",
    "schedules",
    "trace",
    "workers",
]

#: Dead letters listed on a queue's page (the newest are listed last).
DEAD_LETTERS_SHOWN = 200


def can_pause(broker: Broker) -> bool:
    """Whether the store keeps pauses (the ``control`` family; RabbitMQ has none)."""
    return bool(broker.backend.capabilities.control)


def can_cancel(broker: Broker) -> bool:
    """Whether the store can cancel messages (the ``control`` family)."""
    return bool(broker.backend.capabilities.control)


@attrs.frozen
class Line:
    """One row of a figures table: a queue, or one tenant's share of a queue.

    Attributes:
        queue: Queue name.
        tenant: The tenant of this share, or ``None`` for the queue's totals.
        stats: The figures.
        failure_rate: Failed share of the last minute's finished deliveries.
        alerts: Alerts raised on this row.
        series: Its per-minute history, when the store keeps one.
    """

    queue: str
    tenant: str | None
    stats: QueueStats
    failure_rate: float | None
    alerts: tuple[Alert, ...]
    series: Series | None

    @property
    def level(self) -> str:
        """``critical``, ``warning`` or ``ok``."""
        levels = {a.level for a in self.alerts}
        return "critical" if "critical" in levels else "warning" if levels else "ok"

    def extra(self, name: str) -> Any:
        """A figure newer pmsq versions add (``consumers``, ``paused``, ``eta``...), or None."""
        return getattr(self.stats, name, None)


def _line(
    qs: QueueStats,
    tenant: str | None,
    alerts: Sequence[Alert],
    series: dict[tuple[str, str], Series] | None,
    series_key: tuple[str, str],
) -> Line:
    mine = tuple(a for a in alerts if a.queue == qs.name and a.tenant == tenant)
    return Line(
        queue=qs.name,
        tenant=tenant,
        stats=qs,
        failure_rate=failure_rate(qs),
        alerts=mine,
        series=None if series is None else series.get(series_key, _EMPTY),
    )


_EMPTY = Series(processed=(0,) * 60, failed=(0,) * 60, p95_ms=(None,) * 60)


@attrs.frozen
class Overview:
    """Every queue and each tenant's share, with alerts.

    Attributes:
        report: The snapshot the figures come from.
        queues: One line per queue.
        tenants: Per tenant, its line in each queue.
        charts: Whether per-minute history is available.
    """

    report: Report
    queues: tuple[Line, ...]
    tenants: dict[str, tuple[Line, ...]]
    charts: bool


def overview(broker: Broker, tenant: str | None) -> Overview:
    """Read the overview a viewer limited to ``tenant`` may see."""
    r = report(broker, tenant=tenant)
    series = read_series(broker.backend, r.now, tenant=tenant)
    queues = []
    by_tenant: dict[str, list[Line]] = {}
    for name in sorted(r.stats.queues):
        qs = r.stats.queues[name]
        queues.append(_line(qs, None, r.alerts, series, (name, "")))
        for t, ts in sorted(qs.tenants.items()):
            by_tenant.setdefault(t, []).append(_line(ts, t, r.alerts, series, (name, t)))
    return Overview(
        report=r,
        queues=tuple(queues),
        tenants={t: tuple(lines) for t, lines in sorted(by_tenant.items())},
        charts=series is not None,
    )


@attrs.frozen
class QueuePage:
    """One queue: its figures, its tenants, its dead letters and pauses.

    Attributes:
        line: The queue's totals (the viewer's tenant's share for a tenant).
        tenants: Each tenant's share (empty for a tenant viewer).
        dead_letters: Up to :data:`DEAD_LETTERS_SHOWN` dead letters, oldest first.
        pauses: Pauses on this queue, if pmsq has pauses.
        charts: Whether per-minute history is available.
    """

    line: Line
    tenants: tuple[Line, ...]
    dead_letters: tuple[DeadLetter, ...]
    pauses: tuple[Any, ...]
    charts: bool


def queue_exists(broker: Broker, queue: str) -> bool:
    """Whether the store has declared ``queue`` (an invalid name is not a queue)."""
    from pmsq.config import check_queue_name
    from pmsq.errors import ConfigurationError

    try:
        check_queue_name(queue)
    except ConfigurationError:
        return False
    return broker.backend.queue_config(queue) is not None


def queue_page(broker: Broker, tenant: str | None, queue: str) -> QueuePage:
    """Read the page of ``queue`` (the caller checked that it exists)."""
    r = report(broker, queue, tenant=tenant)
    series = read_series(broker.backend, r.now, tenant=tenant)
    qs = r.stats.queues.get(queue, QueueStats(name=queue))
    letters = (broker if tenant is None else broker.tenant(tenant)).dead_letters(queue)
    dead = letters.list(limit=DEAD_LETTERS_SHOWN)
    return QueuePage(
        line=_line(qs, None, r.alerts, series, (queue, "")),
        tenants=tuple(
            _line(ts, t, r.alerts, series, (queue, t)) for t, ts in sorted(qs.tenants.items())
        ),
        dead_letters=tuple(dead),
        pauses=tuple(p for p in pauses(broker, tenant) if p.queue == queue),
        charts=series is not None,
    )


def schedules(broker: Broker, tenant: str | None) -> list[Any]:
    """The schedules the viewer may see, by name."""
    scope = broker if tenant is None else broker.tenant(tenant)
    return sorted(scope.schedules(), key=lambda s: (s.tenant or "", s.name))


def pauses(broker: Broker, tenant: str | None) -> list[Any]:
    """The pauses the viewer may see (none when this pmsq has no pauses)."""
    if not can_pause(broker):
        return []
    found = broker.pauses()
    return [p for p in found if tenant is None or p.tenant == tenant]


def can_list_workers(broker: Broker) -> bool:
    """Whether the store records worker heartbeats (the ``presence`` family)."""
    return bool(broker.backend.capabilities.presence)


def workers(broker: Broker, queue: str | None = None) -> list[Any] | None:
    """The live worker processes (serving ``queue``), or ``None`` when nobody can tell.

    Worker presence comes with another part of pmsq; without it, or on a
    backend that records no heartbeats, the answer is unknown, not "none".
    """
    if not can_list_workers(broker):
        return None
    found = broker.workers()
    return [w for w in found if queue is None or queue in w.queues]


def trace(broker: Broker, tenant: str | None, ident: str) -> list[MessageTrace] | None:
    """The history of a message id (or dedup id), or ``None`` without a journal.

    A tenant viewer gets only the messages of its tenant: another tenant's
    message id finds nothing, as if it did not exist.
    """
    from pmsq.cli.trace import group

    backend = broker.backend
    if not isinstance(backend, History):
        return None
    events = backend.history(message_id=ident, limit=1000)
    if not events:
        events = backend.history(dedup_id=ident, limit=1000)
    if tenant is not None:
        events = [e for e in events if e.tenant == tenant]
    return group(events)


def utc(at: float) -> dt.datetime:
    """An epoch time as an aware UTC datetime."""
    return dt.datetime.fromtimestamp(at, tz=dt.UTC)
