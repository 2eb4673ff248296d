"""``Heartbeats``: when each running handler's lease must next be extended.

A plain schedule, free of threads and event loops: the thread Worker runs
it from one heartbeat thread, the AsyncWorker from one task. A lease is
extended every third of its length, so a handler may run far longer than
its queue's ``lease`` and is never delivered again while it is alive; the
lease only runs out if the process dies or hangs so badly that its
heartbeat cannot run.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["Heartbeats", "beat_interval"]

# Extending more often than this buys nothing and costs a write each time.
_MIN_INTERVAL = 0.01

T = TypeVar("T", bound=Hashable)


def beat_interval(lease: float) -> float:
    """Seconds between extensions of a lease of ``lease`` seconds."""
    return max(_MIN_INTERVAL, lease / 3.0)


class Heartbeats(Generic[T]):
    """Next beat time (monotonic seconds) of every entry; safe to share between threads.

    Args:
        on_earlier: Called (outside the lock) when an added entry is due
            before every other: the driver's sleeper must wake up sooner.
    """

    def __init__(self, on_earlier: Callable[[], None] = lambda: None) -> None:
        self.on_earlier = on_earlier
        self._lock = threading.Lock()
        self._next: dict[T, tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self._next)

    def add(self, entry: T, interval: float, now: float) -> None:
        """Beat ``entry`` every ``interval`` seconds, first at ``now + interval``."""
        at = now + interval
        with self._lock:
            earliest = min((t for t, _ in self._next.values()), default=math.inf)
            self._next[entry] = (at, interval)
        if at < earliest:
            self.on_earlier()

    def hurry(self, entry: T, now: float) -> None:
        """Beat ``entry`` at ``now`` instead of at its next time (no-op if absent)."""
        with self._lock:
            if entry not in self._next:
                return
            self._next[entry] = (now, self._next[entry][1])
        self.on_earlier()

    def remove(self, entry: T) -> None:
        """Stop beating ``entry`` (no-op if absent)."""
        with self._lock:
            self._next.pop(entry, None)

    def __contains__(self, entry: T) -> bool:
        return entry in self._next

    def due(self, now: float) -> list[T]:
        """Entries due at ``now``, each rescheduled one interval later."""
        out = []
        with self._lock:
            for entry, (at, interval) in self._next.items():
                if at <= now:
                    out.append(entry)
                    self._next[entry] = (now + interval, interval)
        return out

    def next_at(self) -> float | None:
        """When the next entry is due, or ``None`` when there is none."""
        with self._lock:
            return min((t for t, _ in self._next.values()), default=None)
