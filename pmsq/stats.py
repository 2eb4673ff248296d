"""Frozen statistics snapshots. ``stats()``, ``pmsq stats`` and the monitor all read these."""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs

__all__ = [
    "HISTOGRAM_BOUNDS_MS",
    "WAIT_BOUNDS_MS",
    "QueueStats",
    "Stats",
    "StatsBuilder",
    "eta",
    "percentile_from_histogram",
    "with_consumers",
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

# Upper bounds (ms) of the wait-time histogram (due to first delivery): a
# message may wait hours behind a backlog, so it reaches further than handler times.
WAIT_BOUNDS_MS: tuple[float, ...] = (
    *HISTOGRAM_BOUNDS_MS,
    120_000,
    300_000,
    900_000,
    1_800_000,
    3_600_000,
    7_200_000,
    21_600_000,
    86_400_000,
)


def percentile_from_histogram(
    counts: list[int] | tuple[int, ...],
    q: float,
    bounds: tuple[float, ...] = HISTOGRAM_BOUNDS_MS,
) -> float | None:
    """Estimate the ``q`` quantile (0..1) in ms from bucket counts, by linear interpolation.

    Args:
        counts: Bucket counts; bucket ``i`` holds values up to ``bounds[i]``,
            the last one everything above.
        q: The quantile.
        bounds: The buckets' upper bounds (handler times by default).

    Returns:
        The estimate, or ``None`` when the histogram is empty.
    """
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0.0
    lower = 0.0
    for i, count in enumerate(counts):
        upper = bounds[i] if i < len(bounds) else lower * 2 or 1.0
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
        oldest_age: Seconds the longest-due waiting message has waited since it
            became due (its delay or retry backoff ended), or None when nothing
            waiting is due: a message scheduled for next week is not late.
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
        consumers: Live worker processes with a handler for the queue (known by
            their heartbeats; see ``broker.workers()``), or None when the
            backend cannot tell. The same figure in each tenant's entry.
        wait_p50_ms: Median time from due to first delivery of the messages
            first delivered during the last 60 s, or None.
        wait_p95_ms: 95th percentile of the same, or None.
        put_per_minute: Messages put during the last 60 s.
        eta: Seconds to deliver what is ready now at the last minute's ack
            rate (``ready * 60 / processed_per_minute``), or None without acks.
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
    consumers: int | None = None
    wait_p50_ms: float | None = None
    wait_p95_ms: float | None = None
    put_per_minute: int = 0
    eta: float | None = None
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
    QueueStats counters plus ``oldest``, the earliest due time of a waiting
    message that is due, ``hist``, the handler-time histogram, and
    ``wait_hist``, the due-to-delivery histogram); :meth:`queues` sums tenants
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
        "put_per_minute",
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
            d["wait_hist"] = []
            by_tenant[tenant] = d
        return d

    @staticmethod
    def merge(into: dict[str, Any], other: dict[str, Any]) -> None:
        """Add ``other``'s figures (any subset of the keys) to ``into``."""
        for k, v in other.items():
            if k == "oldest":
                if v is not None and (into[k] is None or v < into[k]):
                    into[k] = v
            elif k in ("hist", "wait_hist"):
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
        wait_p50_ms=percentile_from_histogram(d["wait_hist"], 0.5, WAIT_BOUNDS_MS),
        wait_p95_ms=percentile_from_histogram(d["wait_hist"], 0.95, WAIT_BOUNDS_MS),
        eta=eta(d["ready"], d["processed_per_minute"]),
        **{k: d[k] for k in StatsBuilder._COUNTERS},
    )


def eta(ready: int, acks_per_minute: int) -> float | None:
    """Seconds to deliver ``ready`` messages at ``acks_per_minute``; None without acks."""
    if acks_per_minute <= 0:
        return None
    return ready * 60.0 / acks_per_minute


def with_consumers(stats: Stats, consumers: dict[str, int]) -> Stats:
    """``stats`` with each queue's (and its tenants') ``consumers`` set from ``consumers``.

    Args:
        stats: A snapshot whose ``consumers`` are unknown.
        consumers: Live workers per queue name (a queue not named has none).
    """

    def one(qs: QueueStats) -> QueueStats:
        n = consumers.get(qs.name, 0)
        tenants = {t: attrs.evolve(ts, consumers=n) for t, ts in qs.tenants.items()}
        return attrs.evolve(qs, consumers=n, tenants=tenants)

    return attrs.evolve(stats, queues={name: one(qs) for name, qs in stats.queues.items()})
