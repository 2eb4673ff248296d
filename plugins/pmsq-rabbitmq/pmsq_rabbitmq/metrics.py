"""Outcome counters of this process (RabbitMQ keeps no such history).

``stats()`` on RabbitMQ reports depths from the broker's queue counts and
outcomes (processed, failed, retried, dead-lettered, handler times) as seen
by this process only: ``Capabilities.exact_stats`` is False.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque

__all__ = ["Metrics"]

_WINDOW = 60.0
_KINDS = ("processed", "failed", "retried", "dead_lettered")


class Metrics:
    """Totals and last-minute events per queue, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(_KINDS, 0))
        self._recent: dict[str, deque[tuple[float, str, float | None]]] = defaultdict(deque)

    def add(self, queue: str, kind: str, duration_ms: float | None = None) -> None:
        """Count one outcome of ``kind`` (``processed``, ``failed``, ...)."""
        now = time.monotonic()
        with self._lock:
            self._totals[queue][kind] += 1
            recent = self._recent[queue]
            recent.append((now, kind, duration_ms))
            while recent and (now - recent[0][0] > _WINDOW or len(recent) > 100_000):
                recent.popleft()

    def figures(self, queue: str) -> dict[str, int | float | None]:
        """Keyword arguments for ``QueueStats``."""
        now = time.monotonic()
        with self._lock:
            totals = dict(self._totals.get(queue) or dict.fromkeys(_KINDS, 0))
            recent = [e for e in self._recent.get(queue, ()) if now - e[0] <= _WINDOW]
        out: dict[str, int | float | None] = dict(totals)
        for kind in _KINDS:
            out[f"{kind}_per_minute"] = sum(1 for e in recent if e[1] == kind)
        times = sorted(e[2] for e in recent if e[2] is not None)
        out["p50_ms"] = times[len(times) // 2] if times else None
        out["p95_ms"] = times[min(len(times) - 1, int(len(times) * 0.95))] if times else None
        return out
