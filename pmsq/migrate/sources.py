"""Where ``pmsq migrate`` reads from: a pmsq store (any backend) or a persist-queue file.

A source only reads. Opening a pmsq store goes through its backend, which
writes nothing to a current store; the persist-queue source opens the file
with persist-queue itself and never acks, nacks or resumes anything.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Iterator

from pmsq.backends.base import Backend, DedupRecord, StoredMessage
from pmsq.backends.control_family import Control
from pmsq.backends.families import Transfer
from pmsq.backends.schedule_family import ScheduleStore, StoredSchedule
from pmsq.backends.types import PauseRecord
from pmsq.config import QueueConfig
from pmsq.errors import ConfigurationError

__all__ = [
    "BackendSource",
    "Counts",
    "OneQueue",
    "Source",
    "require_export",
    "require_import",
]

#: Per queue: (pending messages including in flight, dead letters).
Counts = dict[str, tuple[int, int]]


class Source(abc.ABC):
    """What a migration reads: queue declarations, bindings, messages, dedup ids,
    schedules and pauses."""

    #: Shown in progress and errors (passwords masked).
    description: str = "source"

    @abc.abstractmethod
    def queues(self) -> list[QueueConfig]:
        """The queue declarations to create in the destination."""

    def bindings(self) -> list[tuple[str, str]]:
        """Topic subscriptions ``(pattern, queue)``."""
        return []

    @abc.abstractmethod
    def counts(self) -> Counts:
        """Pending (in flight included) and dead counts per queue, for progress and checks."""

    def in_flight(self) -> dict[str, int]:
        """Messages leased right now, per queue (only queues that have some)."""
        return {}

    @abc.abstractmethod
    def pages(self, queue: str, batch: int) -> Iterator[list[StoredMessage]]:
        """The messages of ``queue`` in pages of at most ``batch``, in put order."""

    def dedup(self, queue: str) -> list[DedupRecord]:
        """Dedup ids still remembered for ``queue``.

        Raises:
            ConfigurationError: the source cannot export them.
        """
        return []

    def schedules(self) -> list[StoredSchedule]:
        """Stored recurring schedules, with their cursors (none by default)."""
        return []

    def pauses(self) -> list[PauseRecord]:
        """Pauses in force (queues, tenants, keys held; none by default)."""
        return []

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release the source. Idempotent."""


class BackendSource(Source):
    """A pmsq store read through its backend's export methods."""

    def __init__(self, backend: Backend, description: str) -> None:
        self.backend = backend
        self.description = description

    def queues(self) -> list[QueueConfig]:
        return self.backend.list_queues()

    def bindings(self) -> list[tuple[str, str]]:
        return self.backend.bindings()

    def counts(self) -> Counts:
        stats = self.backend.stats(now=time.time())
        return {
            name: (q.ready + q.delayed + q.in_flight, q.dead) for name, q in stats.queues.items()
        }

    def in_flight(self) -> dict[str, int]:
        stats = self.backend.stats(now=time.time())
        return {name: q.in_flight for name, q in stats.queues.items() if q.in_flight}

    def pages(self, queue: str, batch: int) -> Iterator[list[StoredMessage]]:
        cursor: str | None = None
        while True:
            page, cursor = Transfer.of(self.backend, "export_messages").export_messages(
                queue, after=cursor, limit=batch
            )
            if page:
                yield page
            if cursor is None:
                return

    def dedup(self, queue: str) -> list[DedupRecord]:
        return Transfer.of(self.backend, "export_dedup").export_dedup(queue, now=time.time())

    def schedules(self) -> list[StoredSchedule]:
        if not isinstance(self.backend, ScheduleStore):
            return []
        return self.backend.list_schedules()

    def pauses(self) -> list[PauseRecord]:
        if not isinstance(self.backend, Control):
            return []
        return self.backend.pauses(now=time.time())

    def close(self) -> None:
        self.backend.close()


class OneQueue(Source):
    """One queue of another source: its declaration, bindings, messages, dedup ids,
    the schedules that put to it and its pauses.

    ``pmsq migrate SRC DST --queue Q`` moves a queue to the store the routes
    will send it to (docs/several-stores.md); the rest of the source is not read.

    Args:
        source: The whole source (closed with this one).
        queue: The queue to move.

    Raises:
        ConfigurationError: the source has no queue of that name.
    """

    def __init__(self, source: Source, queue: str) -> None:
        self.source = source
        self.queue = queue
        self.description = f"{source.description} (queue {queue})"
        configs = [c for c in source.queues() if c.name == queue]
        if not configs:
            known = ", ".join(sorted(c.name for c in source.queues())) or "none"
            raise ConfigurationError(f"the source has no queue {queue!r} to move (queues: {known})")
        self._config = configs[0]

    def queues(self) -> list[QueueConfig]:
        return [self._config]

    def bindings(self) -> list[tuple[str, str]]:
        return [(p, q) for p, q in self.source.bindings() if q == self.queue]

    def counts(self) -> Counts:
        return {q: c for q, c in self.source.counts().items() if q == self.queue}

    def in_flight(self) -> dict[str, int]:
        return {q: n for q, n in self.source.in_flight().items() if q == self.queue}

    def pages(self, queue: str, batch: int) -> Iterator[list[StoredMessage]]:
        return self.source.pages(queue, batch)

    def dedup(self, queue: str) -> list[DedupRecord]:
        return self.source.dedup(queue)

    def schedules(self) -> list[StoredSchedule]:
        return [s for s in self.source.schedules() if s.queue == self.queue]

    def pauses(self) -> list[PauseRecord]:
        return [p for p in self.source.pauses() if p.queue == self.queue]

    def warnings(self) -> list[str]:
        """What the operator must also do: a fallback queue is not moved with its queue."""
        fallback = self._config.fallback
        if fallback is None:
            return []
        return [
            f"queue {self.queue!r} has fallback {fallback!r}, which stays in the source; "
            f"move it too (--queue {fallback}) and route both to the same store"
        ]

    def close(self) -> None:
        self.source.close()


def require_export(backend: Backend) -> None:
    """Fail early, naming the backend, if it cannot be a migration's source.

    Raises:
        ConfigurationError: the backend lacks ``export_messages``.
    """
    if not isinstance(backend, Transfer):
        raise ConfigurationError(
            f"the {backend.name} backend cannot export messages; it cannot be the source "
            "of pmsq migrate"
        )


def require_import(backend: Backend) -> None:
    """Fail early, naming the backend, if it cannot be a migration's destination.

    Raises:
        ConfigurationError: the backend lacks ``import_messages``.
    """
    if not isinstance(backend, Transfer):
        raise ConfigurationError(
            f"the {backend.name} backend cannot import messages; it cannot be the destination "
            "of pmsq migrate"
        )
