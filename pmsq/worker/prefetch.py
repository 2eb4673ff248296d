"""How many messages a worker claims ahead of its free handler slots (``prefetch=``).

A fixed ``prefetch=N`` is the bound as is. The adaptive bound (``None``,
the default) follows the measured handler rate: what the handler slots
finish in about a tenth of a second, at least ``concurrency``, at most
:data:`PREFETCH_CAP`, and never more than they can start within a third of
a lease, before the held messages' first heartbeat is even due. Free of
locks: the lifecycle calls it under its own.
"""

from __future__ import annotations

import math

__all__ = ["PREFETCH_CAP", "Prefetch"]

# Hold about this many seconds of work ...
_WINDOW = 0.1
#: ... but never more than this many messages. Rounds of 64-256 measured
#: within a few percent of each other (issue 19's prototype): past that a
#: bigger batch saves nothing per message, while the memory held, the share
#: taken from other workers and what a stop must hand back keep growing.
PREFETCH_CAP = 256
# Held messages must start within this share of their lease.
_LEASE_SHARE = 1 / 3
# A handler's measured time counts as at least this (seconds): a no-op
# handler's microseconds say nothing about the worker's own cost per message.
_MIN_SERVICE = 1e-4
# Weight of the newest handler time in the moving average.
_EWMA_WEIGHT = 0.1


class Prefetch:
    """The prefetch bound of one worker run.

    Args:
        concurrency: The worker's handler slots.
        fixed: ``prefetch=`` as given: an int >= 0, or ``None`` for adaptive.
    """

    def __init__(self, concurrency: int, fixed: int | None) -> None:
        self.concurrency = concurrency
        self.fixed = fixed
        #: Moving average of handler time in seconds (None: no handler ended yet).
        self.service: float | None = None
        # When a handler last ended, or one started after none ran (monotonic).
        self._last_done = 0.0
        # Lease length of each queue's last claim: no store read to bound prefetch.
        self._leases: dict[str, float] = {}

    def handler_ended(self, seconds: float, now: float) -> None:
        """A handler ran ``seconds`` and ended at ``now`` (monotonic)."""
        if self.fixed is not None:
            return
        self._last_done = now
        avg = self.service
        self.service = seconds if avg is None else avg + _EWMA_WEIGHT * (seconds - avg)

    def first_started(self, now: float) -> None:
        """A handler started while none ran: the time since the last end counts from ``now``."""
        self._last_done = now

    def claimed(self, queue: str, lease: float) -> None:
        """A claim of ``queue`` was made with leases of ``lease`` seconds."""
        self._leases[queue] = lease

    def bound(self, running: int, now: float, lease: float | None = None) -> int:
        """How many messages may be held beyond the running handlers.

        Args:
            running: Handlers running now.
            now: Monotonic seconds.
            lease: The lease to cover; by default the shortest one this
                worker's claims were made with.

        Returns:
            The fixed ``prefetch``, or the adaptive bound: 0 before any
            handler ended (the rate is unknown); handlers running long
            without any ending shrink it (the completion rate is at most one
            per that long now).
        """
        if self.fixed is not None:
            return self.fixed
        service = self.service
        if service is None:
            return 0
        if running:
            service = max(service, now - self._last_done)
        if lease is None:
            lease = min(self._leases.values(), default=math.inf)
        rate = self.concurrency / max(service, _MIN_SERVICE)
        want = max(self.concurrency, min(PREFETCH_CAP, int(rate * _WINDOW)))
        return min(want, int(rate * lease * _LEASE_SHARE))
