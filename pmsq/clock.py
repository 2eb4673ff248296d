"""Time sources. Everything in pmsq that reads time reads an injected clock."""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "ManualClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Wall-clock seconds since the epoch, shared by every process using a store."""

    def time(self) -> float:
        """Return the current time in epoch seconds."""
        ...


class SystemClock:
    """The real wall clock (``time.time``)."""

    def time(self) -> float:
        """Return ``time.time()``."""
        return time.time()


class ManualClock:
    """A clock that only moves when told, for deterministic tests of leases and delays.

    Args:
        start: Initial epoch seconds.
    """

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def time(self) -> float:
        """Return the clock's current value."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock by ``seconds`` (negative moves it back, like a wall-clock jump)."""
        with self._lock:
            self._now += seconds

    def set(self, value: float) -> None:
        """Set the clock to ``value`` epoch seconds."""
        with self._lock:
            self._now = float(value)
