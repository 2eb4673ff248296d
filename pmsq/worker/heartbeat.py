"""The worker's heartbeats: lease extensions, and the worker's own presence.

``Heartbeats`` says when each running handler's lease must next be
extended. A plain schedule, free of threads and event loops: the thread
Worker runs it from one heartbeat thread, the AsyncWorker from one task. A
lease is extended every third of its length, so a handler may run far
longer than its queue's ``lease`` and is never delivered again while it is
alive; the lease only runs out if the process dies or hangs so badly that
its heartbeat cannot run.

``PresenceBeat`` is the worker process's own heartbeat in the store (the
presence family, :mod:`pmsq.backends.presence`): the same heartbeat loop
writes it every :data:`~pmsq.backends.presence.BEAT_INTERVAL` seconds,
whatever the traffic, and the lifecycle deletes it when the run ends.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar

from pmsq.backends.presence import BEAT_INTERVAL, Presence, WorkerBeat
from pmsq.errors import PmsqError

if TYPE_CHECKING:
    from pmsq.clock import Clock

__all__ = ["Heartbeats", "PresenceBeat", "beat_interval"]

log = logging.getLogger("pmsq.worker")

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

    def add_many(self, entries: Sequence[T], interval: float, now: float) -> None:
        """Beat each of ``entries`` every ``interval`` seconds, first at ``now + interval``."""
        at = now + interval
        with self._lock:
            earliest = min((t for t, _ in self._next.values()), default=math.inf)
            for entry in entries:
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


class PresenceBeat:
    """One worker run's presence row: written every ``interval`` seconds, deleted at the end.

    On a backend without the presence family it does nothing (``next_at``
    is ``None``). A failed write is logged and tried again at the next beat:
    presence must never stop a worker.

    Args:
        backend: The store.
        clock: The broker's clock (``started_at`` / ``last_seen``).
        worker_id: The worker's id (its journal ``consumer`` name).
        queues: The queues it has handlers for.
        concurrency: Its handler slots.
        interval: Seconds between beats.
    """

    def __init__(
        self,
        backend: object,
        clock: Clock,
        worker_id: str,
        queues: Sequence[str],
        concurrency: int,
        *,
        interval: float = BEAT_INTERVAL,
    ) -> None:
        self._store = backend if isinstance(backend, Presence) else None
        self._clock = clock
        self._id = worker_id
        self._queues = tuple(sorted(queues))
        self._concurrency = concurrency
        self._interval = interval
        self._started_at: float | None = None
        # Monotonic time of the next beat; the first one is due at once.
        self._next: float | None = None if self._store is None else -math.inf

    def next_at(self) -> float | None:
        """When the next beat is due (monotonic seconds), or ``None`` for never."""
        return self._next

    def due(self, now: float) -> bool:
        """Whether a beat is due at ``now`` (monotonic); if so the next is scheduled."""
        if self._next is None or self._next > now:
            return False
        self._next = now + self._interval
        return True

    def start(self, now: float) -> None:
        """Beat at once (blocking) and schedule the next beat one interval after ``now``.

        The thread ``Worker`` calls it in ``start()``, so the worker is listed
        by ``broker.workers()`` as soon as ``start()`` returns.
        """
        if self._store is None:
            return
        self.beat()
        self._next = now + self._interval

    def beat(self) -> None:
        """Write this worker's row with ``last_seen`` = now (blocking)."""
        if self._store is None:
            return
        now = self._clock.time()
        if self._started_at is None:
            self._started_at = now
        try:
            self._store.beat_worker(
                WorkerBeat(
                    id=self._id,
                    queues=self._queues,
                    concurrency=self._concurrency,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    started_at=self._started_at,
                    last_seen=now,
                )
            )
        except PmsqError as exc:
            log.warning("could not record the worker's heartbeat (trying again): %s", exc)

    def leave(self) -> None:
        """Delete this worker's row: it stops now (a graceful stop). Beats no more."""
        self._next = None
        if self._store is None or self._started_at is None:
            return
        try:
            self._store.forget_worker(self._id)
        except PmsqError as exc:
            log.warning("could not remove the worker's heartbeat row: %s", exc)
