"""A ``Stats`` snapshot in the Prometheus text exposition format (version 0.0.4).

Series without a ``tenant`` label are the queue's totals; series with one are
that tenant's share (messages put without a tenant appear only in the
totals). So ``pmsq_queue_ready{tenant=""}`` selects queue totals in PromQL,
and ``pmsq_queue_ready{tenant!=""}`` the per-tenant breakdown. Pure: no rich.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pmsq.alerts import Alert
from pmsq.stats import QueueStats, Stats

__all__ = ["to_prometheus"]

Getter = Callable[[QueueStats], float | None]

# (name, type, help, value) per metric family, in output order.
_FAMILIES: tuple[tuple[str, str, str, Getter], ...] = (
    ("pmsq_queue_ready", "gauge", "Messages deliverable now.", lambda q: q.ready),
    (
        "pmsq_queue_delayed",
        "gauge",
        "Messages waiting for their time (delay, backoff) or behind their key.",
        lambda q: q.delayed,
    ),
    ("pmsq_queue_in_flight", "gauge", "Messages leased to a consumer.", lambda q: q.in_flight),
    ("pmsq_queue_dead", "gauge", "Dead letters kept.", lambda q: q.dead),
    (
        "pmsq_queue_oldest_age_seconds",
        "gauge",
        "Seconds the longest-due waiting message has waited since it became due "
        "(absent when nothing waiting is due).",
        lambda q: q.oldest_age,
    ),
    (
        "pmsq_queue_consumers",
        "gauge",
        "Live worker processes serving the queue (absent when the backend cannot tell).",
        lambda q: q.consumers,
    ),
    (
        "pmsq_queue_put_per_minute",
        "gauge",
        "Messages put during the last minute.",
        lambda q: q.put_per_minute,
    ),
    (
        "pmsq_queue_eta_seconds",
        "gauge",
        "Seconds to deliver what is ready at the last minute's ack rate (absent without acks).",
        lambda q: q.eta,
    ),
    ("pmsq_queue_processed_total", "counter", "Acked messages.", lambda q: q.processed),
    (
        "pmsq_queue_failed_total",
        "counter",
        "Failed deliveries (handler errors, lease expiries).",
        lambda q: q.failed,
    ),
    ("pmsq_queue_retried_total", "counter", "Retries scheduled.", lambda q: q.retried),
    (
        "pmsq_queue_dead_lettered_total",
        "counter",
        "Messages dead-lettered.",
        lambda q: q.dead_lettered,
    ),
)
_QUANTILES: tuple[tuple[str, Getter], ...] = (
    ("0.5", lambda q: q.p50_ms),
    ("0.95", lambda q: q.p95_ms),
)
_WAIT_QUANTILES: tuple[tuple[str, Getter], ...] = (
    ("0.5", lambda q: q.wait_p50_ms),
    ("0.95", lambda q: q.wait_p95_ms),
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Sequence[tuple[str, str]]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def _series(stats: Stats, tenants: bool) -> list[tuple[list[tuple[str, str]], QueueStats]]:
    out: list[tuple[list[tuple[str, str]], QueueStats]] = []
    for name in sorted(stats.queues):
        qs = stats.queues[name]
        out.append(([("queue", name)], qs))
        if tenants:
            for tenant in sorted(qs.tenants):
                out.append(([("queue", name), ("tenant", tenant)], qs.tenants[tenant]))
    return out


def to_prometheus(stats: Stats, alerts: Sequence[Alert] = (), *, tenants: bool = True) -> str:
    """Render ``stats`` (and the alerts evaluated on it) as Prometheus text.

    Args:
        stats: The snapshot.
        alerts: Alerts to expose as ``pmsq_alert`` gauges (value 1).
        tenants: Include per-tenant series.

    Returns:
        The exposition text, ending with a newline.
    """
    series = _series(stats, tenants)
    lines: list[str] = []
    for name, kind, text, get in _FAMILIES:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for labels, qs in series:
            value = get(qs)
            if value is not None:
                lines.append(f"{name}{_labels(labels)} {_number(value)}")
    for name, text, quantiles in (
        ("pmsq_queue_handler_seconds", "Handler time quantiles", _QUANTILES),
        (
            "pmsq_queue_wait_seconds",
            "Quantiles of the time from due to first delivery",
            _WAIT_QUANTILES,
        ),
    ):
        lines += [f"# HELP {name} {text} over the last minute.", f"# TYPE {name} gauge"]
        for labels, qs in series:
            for quantile, get in quantiles:
                ms = get(qs)
                if ms is not None:
                    lines.append(
                        f"{name}{_labels([*labels, ('quantile', quantile)])} {ms / 1000!r}"
                    )
    lines += [
        "# HELP pmsq_alert An alert rule crossed now (1), by queue, metric and level.",
        "# TYPE pmsq_alert gauge",
    ]
    for a in alerts:
        labels = [("queue", a.queue)]
        if a.tenant is not None:
            labels.append(("tenant", a.tenant))
        labels += [("metric", a.metric), ("level", a.level)]
        lines.append(f"pmsq_alert{_labels(labels)} 1")
    return "\n".join(lines) + "\n"
