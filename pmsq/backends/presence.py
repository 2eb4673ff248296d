"""The presence family: worker processes announce themselves in the store.

Every running ``Worker`` / ``AsyncWorker`` (so every child of ``pmsq worker
--processes N`` and ``manage.py pmsq_worker``) writes one small row every
:data:`BEAT_INTERVAL` seconds: its id, the queues it has handlers for, its
concurrency, host, pid, when it started and when it was last seen. A
graceful stop deletes the row; a killed process simply stops beating, and
its row stops counting once it is older than :data:`LIVE_WINDOW` (three
beats). ``broker.workers()`` lists the live ones and ``QueueStats.consumers``
counts them per queue.

The cost is one upsert per process every few seconds, never per message.
A backend opts in as a whole by mixing in :class:`Presence`; without it,
``broker.workers()`` raises ``ConfigurationError`` and ``consumers`` is
``None`` (unknown), never a misleading ``0``.
"""

from __future__ import annotations

import abc
import datetime as dt
from typing import Any

import attrs

from pmsq.backends.families import Family
from pmsq.stats import Stats, with_consumers

__all__ = [
    "BEAT_INTERVAL",
    "FORGET_AFTER",
    "LIVE_WINDOW",
    "Presence",
    "WorkerBeat",
    "WorkerInfo",
    "consumers_by_queue",
    "live_since",
    "with_presence",
]

#: Seconds between two heartbeats of one worker process.
BEAT_INTERVAL = 5.0
#: A worker is live while its last heartbeat is at most this many seconds old:
#: three beats, so one slow or failed write (a busy store) does not drop it.
LIVE_WINDOW = 3 * BEAT_INTERVAL
#: Rows of workers silent this long (killed ones) are deleted by other workers' beats.
FORGET_AFTER = 3600.0


@attrs.frozen
class WorkerBeat:
    """One worker process's presence row, as stored (times in epoch seconds).

    Attributes:
        id: The worker's id (also the ``consumer`` of its claims in the journal).
        queues: The queues it has handlers for, sorted.
        concurrency: Handlers it runs at once, at most.
        host: Its host name.
        pid: Its process id on that host.
        started_at: When it started.
        last_seen: Its latest heartbeat.
    """

    id: str
    queues: tuple[str, ...]
    concurrency: int
    host: str
    pid: int
    started_at: float
    last_seen: float


@attrs.frozen
class WorkerInfo:
    """A live worker process, as ``broker.workers()`` returns it.

    Attributes:
        id: The worker's id (``pmsq trace`` shows it as the consumer of its deliveries).
        queues: The queues it serves (has handlers for), sorted.
        concurrency: Handlers it runs at once, at most.
        host: Its host name.
        pid: Its process id on that host.
        started_at: When it started (aware UTC).
        last_seen: Its latest heartbeat (aware UTC).
    """

    id: str
    queues: tuple[str, ...]
    concurrency: int
    host: str
    pid: int
    started_at: dt.datetime
    last_seen: dt.datetime

    @classmethod
    def from_beat(cls, beat: WorkerBeat) -> WorkerInfo:
        """The public view of a stored row."""
        return cls(
            id=beat.id,
            queues=beat.queues,
            concurrency=beat.concurrency,
            host=beat.host,
            pid=beat.pid,
            started_at=dt.datetime.fromtimestamp(beat.started_at, dt.UTC),
            last_seen=dt.datetime.fromtimestamp(beat.last_seen, dt.UTC),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict (times as ISO 8601)."""
        return {
            "id": self.id,
            "queues": list(self.queues),
            "concurrency": self.concurrency,
            "host": self.host,
            "pid": self.pid,
            "started_at": self.started_at.isoformat(),
            "last_seen": self.last_seen.isoformat(),
        }


class Presence(Family):
    """The family of a backend that records worker heartbeats (see the module docs)."""

    capability = "presence"

    @abc.abstractmethod
    def beat_worker(self, beat: WorkerBeat) -> None:
        """Insert or update ``beat``'s row (``last_seen`` from ``beat``).

        Also deletes rows silent for :data:`FORGET_AFTER` seconds before
        ``beat.last_seen``, so killed workers do not pile up.
        """

    @abc.abstractmethod
    def forget_worker(self, worker_id: str) -> bool:
        """Delete a worker's row (its graceful stop); whether it existed."""

    @abc.abstractmethod
    def list_workers(self, *, since: float) -> list[WorkerBeat]:
        """Workers whose last heartbeat is at or after ``since``, by host, pid and id."""


def live_since(now: float) -> float:
    """The oldest ``last_seen`` that still counts as live at ``now``."""
    return now - LIVE_WINDOW


def consumers_by_queue(workers: list[WorkerBeat]) -> dict[str, int]:
    """How many of ``workers`` serve each queue (a worker counts once per queue)."""
    out: dict[str, int] = {}
    for w in workers:
        for q in set(w.queues):
            out[q] = out.get(q, 0) + 1
    return out


def with_presence(backend: object, stats: Stats, now: float) -> Stats:
    """``stats`` with ``consumers`` counted from the live heartbeats of ``backend``.

    A backend without the family leaves ``stats`` as it made it (``None``
    unless the backend knows its consumers another way).
    """
    if not isinstance(backend, Presence):
        return stats
    return with_consumers(stats, consumers_by_queue(backend.list_workers(since=live_since(now))))
