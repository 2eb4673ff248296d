"""One snapshot with its alerts and schedules, as ``pmsq stats`` and the dashboard show it.

``pmsq stats --json`` / ``--prometheus`` and the web dashboard's ``/metrics``
read the store through :func:`report` and print it with :func:`as_json` or
:func:`as_prometheus`, so the two never disagree about what a figure means.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from pmsq.alerts import Alert, AlertRule, evaluate, load_rules
from pmsq.backends.presence import with_presence
from pmsq.control import pause_alerts
from pmsq.schedules.schedule import Schedule
from pmsq.stats import Stats

if TYPE_CHECKING:
    from pmsq.broker import Broker

__all__ = ["Report", "as_json", "as_prometheus", "report"]


@attrs.frozen
class Report:
    """A snapshot and what it raises.

    Attributes:
        stats: The figures.
        rules: The stored alert rules of its queues.
        alerts: Queue alerts, then late schedules.
        schedules: The schedules shown with it.
        now: The broker clock's time of the snapshot (epoch seconds).
    """

    stats: Stats
    rules: dict[str, AlertRule]
    alerts: list[Alert]
    schedules: list[Schedule]
    now: float


def report(broker: Broker, queue: str | None = None, *, tenant: str | None = None) -> Report:
    """Read one snapshot of ``broker``'s store (one queue, one tenant, or all).

    Args:
        broker: The broker.
        queue: Only this queue (the caller checked that it exists).
        tenant: Only this tenant's messages and schedules.

    Returns:
        The report.
    """
    from pmsq.schedules.health import read_schedules, schedule_alerts

    now = broker.clock.time()
    # with_presence: live consumers per queue, from the workers' heartbeats.
    snap = with_presence(broker.backend, broker.backend.stats(queue, now=now, tenant=tenant), now)
    rules = load_rules(broker.backend, snap.queues)
    plans = [
        s
        for s in read_schedules(broker.runtime)
        if queue in (None, s.queue) and tenant in (None, s.tenant)
    ]
    paused = [
        a
        for a in pause_alerts(broker.runtime)
        if queue in (None, a.queue) and tenant in (None, a.tenant)
    ]
    alerts = evaluate(snap, rules) + schedule_alerts(plans, now) + paused
    return Report(stats=snap, rules=rules, alerts=alerts, schedules=plans, now=now)


def as_json(r: Report) -> dict[str, Any]:
    """``Stats.to_dict()`` plus ``alerts`` and ``schedules``: ``pmsq stats --json``."""
    from pmsq.schedules.health import schedules_to_dicts

    data = r.stats.to_dict()
    data["alerts"] = [a.to_dict() for a in r.alerts]
    data["schedules"] = schedules_to_dicts(r.schedules, r.now)
    return data


def as_prometheus(r: Report) -> str:
    """The Prometheus text exposition of the report: ``pmsq stats --prometheus``, ``/metrics``."""
    from pmsq.monitor.prometheus import to_prometheus
    from pmsq.schedules.health import schedules_prometheus

    return to_prometheus(r.stats, r.alerts) + schedules_prometheus(r.schedules, r.now)
