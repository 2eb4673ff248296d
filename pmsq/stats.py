"""Frozen statistics snapshots. ``stats()``, ``pmsq stats`` and the monitor all read these."""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs

__all__ = ["HISTOGRAM_BOUNDS_MS", "QueueStats", "Stats", "percentile_from_histogram"]

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
