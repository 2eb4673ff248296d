"""Frozen statistics snapshots. ``stats()``, ``pmsq stats`` and the monitor all read these."""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs

__all__ = [
    "HISTOGRAM_BOUNDS_MS",
    "QueueStats",
    "Stats",
    "StatsBuilder",
    "percentile_from_histogram",
]

# Upper bounds (ms) of the handler-time histogram buckets; the last bucket is open.
HISTOGRAM_BOUNDS_MS: tuple[float, ...] = (
    0.5,
    1,
    2,
    5,
    10,
    20,
    50,
    100,
    200,
    500,
    1000,
    2000,
    5000,
    10000,
    30000,
    60000,
)


def percentile_from_histogram(counts: list[int] | tuple[int, ...], q: float) -> float | None:
    """Estimate the ``q`` quantile (0..1) in ms from bucket counts, by linear interpolation.

    Returns ``None`` when the histogram is empty.
    """
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0.0
    lower = 0.0
    for i, count in enumerate(counts):
        upper = HISTOGRAM_BOUNDS_MS[i] if i < len(HISTOGRAM_BOUNDS_MS) else lower * 2 or 1.0
        if count and seen + count >= rank:
            frac = (rank - seen) / count
            return lower + (upper - lower) * frac
        seen += count
        lower = upper
    return lower


@attrs.frozen
class QueueStats:
    """One queue (or one tenant of a queue) at one instant.

    Attributes:
        name: Queue name.
        ready: Messages deliverable now (heads of their key, due).
        delayed: Messages waiting for their time (delay, backoff) or behind their key.
        in_flight: Messages leased to a consumer.
        dead: Dead letters kept.
        oldest_age: Seconds the oldest waiting (ready or delayed) message has waited, or None.
        processed: Acked messages, all time.
        failed: Failed deliveries (handler errors, lease expiries), all time.
        retried: Retries scheduled, all time.
        dead_lettered: Messages dead-lettered, all time.
        processed_per_minute: Acks during the last 60 s.
        failed_per_minute: Failures during the last 60 s.
        retried_per_minute: Retries during the last 60 s.
        dead_lettered_per_minute: Dead letters during the last 60 s.
        p50_ms: Median handler time over the last 60 s, or None.
        p95_ms: 95th percentile handler time over the last 60 s, or None.
        paused: A queue-wide pause (or an open queue circuit) is in force; in
            a tenant's figures (``tenants``, a tenant handle's stats) also a
            pause of that tenant. Key pauses show in ``Broker.pauses()``.
        tenants: The same figures per tenant (empty inside a tenant's own entry).
    """

    name: str
    ready: int = 0
    delayed: int = 0
    in_flight: int = 0
    dead: int = 0
    oldest_age: float | None = None
    processed: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    processed_per_minute: int = 0
    failed_per_minute: int = 0
    retried_per_minute: int = 0
    dead_lettered_per_minute: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    paused: bool = False
    tenants: dict[str, QueueStats] = attrs.field(factory=dict)

    @property
    def depth(self) -> int:
        """Messages not yet acked nor dead: ready + delayed + in flight."""
        return self.ready + self.delayed + self.in_flight

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict."""
        data = attrs.asdict(self, recurse=False)
        data["tenants"] = {t: s.to_dict() for t, s in self.tenants.items()}
        data["depth"] = self.depth
        return data


@attrs.frozen
class Stats:
    """A snapshot of every queue in a store.

    Attributes:
        queues: Per-queue statistics by name.
        bindings: ``(pattern, queue)`` topic subscriptions.
        taken_at: When the snapshot was taken (aware UTC).
    """

    queues: dict[str, QueueStats] = attrs.field(factory=dict)
    bindings: tuple[tuple[str, str], ...] = ()
    taken_at: dt.datetime = attrs.field(factory=lambda: dt.datetime.now(dt.UTC))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict."""
        return {
            "taken_at": self.taken_at.isoformat(),
            "queues": {n: q.to_dict() for n, q in self.queues.items()},
            "bindings": [list(b) for b in self.bindings],
        }


class StatsBuilder:
    """Gathers a backend's per-(queue, tenant) counts into :class:`QueueStats`.

    Backends read their own rows and add to :meth:`figures` (a dict of the
    QueueStats counters plus ``oldest``, the earliest enqueue time waiting,
    and ``hist``, the handler-time histogram); :meth:`queues` sums tenants
    into queue totals, so every backend reports the same shape.

    Args:
        names: Queues to report even when they hold nothing.
    """

    _COUNTERS = (
        "ready",
        "delayed",
        "in_flight",
        "dead",
        "processed",
        "failed",
        "retried",
        "dead_lettered",
        "processed_per_minute",
        "failed_per_minute",
        "retried_per_minute",
        "dead_lettered_per_minute",
    )

    def __init__(self, names: Any = ()) -> None:
        self._per: dict[str, dict[str, dict[str, Any]]] = {n: {} for n in names}

    def figures(self, queue: str, tenant: str) -> dict[str, Any]:
        """The mutable counters of ``tenant`` (``""`` for none) in ``queue``."""
        by_tenant = self._per.setdefault(queue, {})
        d = by_tenant.get(tenant)
        if d is None:
            d = dict.fromkeys(self._COUNTERS, 0)
            d["oldest"] = None
            d["hist"] = []
            by_tenant[tenant] = d
        return d

    @staticmethod
    def merge(into: dict[str, Any], other: dict[str, Any]) -> None:
        """Add ``other``'s figures (any subset of the keys) to ``into``."""
        for k, v in other.items():
            if k == "oldest":
                if v is not None and (into[k] is None or v < into[k]):
                    into[k] = v
            elif k == "hist":
                h = into[k]
                h.extend([0] * (len(v) - len(h)))
                for i, c in enumerate(v):
                    h[i] += c
            else:
                into[k] += v

    def queues(self, now: float) -> dict[str, QueueStats]:
        """Every queue's totals, with its named tenants' own figures under ``tenants``."""
        result: dict[str, QueueStats] = {}
        for q in sorted(self._per):
            total = StatsBuilder().figures(q, "")
            tenants: dict[str, QueueStats] = {}
            for t, d in sorted(self._per[q].items()):
                self.merge(total, d)
                if t:
                    tenants[t] = _queue_stats(q, d, now)
            result[q] = attrs.evolve(_queue_stats(q, total, now), tenants=tenants)
        return result


def _queue_stats(name: str, d: dict[str, Any], now: float) -> QueueStats:
    return QueueStats(
        name=name,
        oldest_age=None if d["oldest"] is None else max(0.0, now - d["oldest"]),
        p50_ms=percentile_from_histogram(d["hist"], 0.5),
        p95_ms=percentile_from_histogram(d["hist"], 0.95),
        **{k: d[k] for k in StatsBuilder._COUNTERS},
    )
