"""The storage interface every backend implements (version 2).

A backend is small and synchronous: the thread Worker calls it directly and
the AsyncWorker through ``anyio.to_thread``. It never blocks waiting for
messages: ``claim`` returns what is ready now, possibly nothing. Everything a
guarantee of DESIGN.md depends on (per-key order, leases, attempts, dedup,
dead letters, fan-out atomicity) happens inside the backend's transactions,
so that several processes sharing one store agree.

The required verbs (abstract below) are what every store needs: declare
queues and bindings, ``put_many``, ``claim``, ``settle``, ``extend``, the
dead-letter verbs, ``stats`` and ``close``. Everything else either has a
correct default built on them (``ack``, ``retry``, ``dead_letter`` and
``release`` are settlements of one; ``wait_for_change`` and
``ready_queues`` are wake-up hints) or belongs to an optional family of
:mod:`pmsq.backends.families` that a backend opts into as a whole.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import attrs

from pmsq.backends.control_family import Control
from pmsq.backends.families import FAMILIES, Family
from pmsq.backends.schedule_family import ScheduleStore
from pmsq.backends.types import (
    Claimed,
    DedupRecord,
    Envelope,
    HistoryEvent,
    PauseRecord,
    Readiness,
    Receipt,
    Settlement,
    StoredDeadLetter,
    StoredMessage,
)
from pmsq.config import QueueConfig
from pmsq.errors import ConfigurationError
from pmsq.stats import Stats

__all__ = [
    "Backend",
    "Capabilities",
    "Claimed",
    "DedupRecord",
    "Envelope",
    "HistoryEvent",
    "PauseRecord",
    "Readiness",
    "Receipt",
    "Settlement",
    "StoredDeadLetter",
    "StoredMessage",
]

#: How long the default ``wait_for_change`` sleeps at most: it cannot know
#: about changes, so it answers "maybe changed" after a short nap.
DEFAULT_CHANGE_WAIT = 0.05


#: Every family a backend may implement: the core ones, the schedules and message control.
_ALL_FAMILIES: tuple[type[Family], ...] = (*FAMILIES, ScheduleStore, Control)


@attrs.frozen
class Capabilities:
    """What a backend can do. A missing capability raises ``ConfigurationError`` when used.

    The semantic flags below are declared by the backend; the families
    (``transactional_put``, ``once``, ``history``, ``transfer``, ``settings``,
    ``inspect``, ``control``; also ``schedules``) are derived from the family
    mixins its class implements, and read as attributes of the same name.

    Attributes:
        per_key_fifo: Strict per-key order (False: order per shard only).
        priorities: ``priority`` is honoured.
        delays: ``delay`` / ``not_before`` / retry backoff are exact.
        dedup: ``dedup_id`` is enforced by the store.
        coalesce: ``coalesce=True`` puts are supported.
        rate_limits: ``RateLimit`` is enforced at claim time.
        tenant_fairness: Claims rotate over tenants.
        exact_stats: Stats counts are exact.
        families: The capability names of the families implemented (set by
            :class:`Backend` from the class; anything given here is replaced).
    """

    per_key_fifo: bool = True
    priorities: bool = True
    delays: bool = True
    dedup: bool = True
    coalesce: bool = True
    rate_limits: bool = True
    tenant_fairness: bool = True
    exact_stats: bool = True
    families: frozenset[str] = frozenset()

    @property
    def transactional_put(self) -> bool:
        """``put(..., connection=)`` writes in the caller's transaction (family)."""
        return "transactional_put" in self.families

    @property
    def once(self) -> bool:
        """``broker.once`` records in the app's transaction (family)."""
        return "once" in self.families

    @property
    def history(self) -> bool:
        """The store keeps a message journal (``pmsq trace``) (family)."""
        return "history" in self.families

    @property
    def transfer(self) -> bool:
        """Messages and dedup records can be exported and imported (family)."""
        return "transfer" in self.families

    @property
    def settings(self) -> bool:
        """Settings every process sees can be stored (family)."""
        return "settings" in self.families

    @property
    def inspect(self) -> bool:
        """Waiting messages can be read without claiming (family)."""
        return "inspect" in self.families

    @property
    def control(self) -> bool:
        """Cancel, reschedule, expiry, snooze, pauses and circuit breakers (family)."""
        return "control" in self.families

    @classmethod
    def flags(cls) -> tuple[str, ...]:
        """The names of the semantic flags (every field but ``families``)."""
        return tuple(f.name for f in attrs.fields(cls) if f.name != "families")

    @classmethod
    def family_names(cls) -> tuple[str, ...]:
        """The capability names of every family a backend may implement."""
        return tuple(f.capability for f in _ALL_FAMILIES)

    def require(self, backend: str, capability: str) -> None:
        """Raise ``ConfigurationError`` unless ``capability`` is supported.

        Raises:
            ConfigurationError: naming the backend and the capability.
        """
        if not getattr(self, capability):
            raise ConfigurationError(
                f"the {backend} backend does not support {capability.replace('_', ' ')}; "
                "see its documentation for the differences from the SQLite backend"
            )


class Backend(abc.ABC):
    """A message store. Implementations must be safe to call from several threads.

    Subclass it, implement the abstract verbs, declare the semantic flags in
    ``capabilities`` and list the families you implement among the bases::

        class MyBackend(Backend, History, Settings):
            capabilities = Capabilities(priorities=False)
            name = "My store"

    Every time argument (``now``) is the broker's clock in epoch seconds, so
    a ``ManualClock`` drives leases, delays and dedup windows in tests.
    """

    #: What this backend supports (families filled in from the class).
    capabilities: ClassVar[Capabilities] = Capabilities()
    #: Human-readable name used in errors ("SQLite", "PostgreSQL").
    name: ClassVar[str] = "backend"
    #: Why a capability is missing, per capability name, for error messages.
    refusals: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Derived from the bases, so the report can neither omit nor invent a family.
        implemented = frozenset(f.capability for f in _ALL_FAMILIES if issubclass(cls, f))
        cls.capabilities = attrs.evolve(cls.capabilities, families=implemented)

    # -- configuration -------------------------------------------------------
    @abc.abstractmethod
    def declare_queue(self, config: QueueConfig) -> None:
        """Create or replace a queue's stored configuration (every process sees it)."""

    @abc.abstractmethod
    def list_queues(self) -> list[QueueConfig]:
        """Return every declared queue, by name."""

    def queue_config(self, name: str) -> QueueConfig | None:
        """Return a queue's stored configuration, or ``None`` if undeclared.

        The default searches :meth:`list_queues`; override it with a lookup.
        """
        return next((c for c in self.list_queues() if c.name == name), None)

    def ensure_queue(self, config: QueueConfig) -> None:
        """Store ``config`` only if the queue is undeclared (a queue's first use).

        Unlike :meth:`declare_queue` it never replaces a declaration, so a
        process that merely uses a queue cannot reset the options another
        process declared a moment before. The default reads, then declares;
        backends with an atomic insert-if-absent should override it.
        """
        if self.queue_config(config.name) is None:
            self.declare_queue(config)

    @abc.abstractmethod
    def bind(self, pattern: str, queue: str) -> None:
        """Persist a topic subscription (idempotent)."""

    @abc.abstractmethod
    def unbind(self, pattern: str, queue: str) -> bool:
        """Remove a topic subscription; return whether it existed."""

    @abc.abstractmethod
    def bindings(self) -> list[tuple[str, str]]:
        """Return all ``(pattern, queue)`` subscriptions, sorted."""

    # -- the message lifecycle ----------------------------------------------
    @abc.abstractmethod
    def put_many(self, envelopes: Sequence[Envelope], *, now: float) -> list[str]:
        """Store envelopes atomically (all or none) and return their ids.

        A dedup hit returns the first message's id and stores nothing; a
        coalescing put returns the id of the waiting message whose payload it
        replaced. Each key's messages are delivered in the order stored.
        (Writing inside the app's transaction is the ``TransactionalPut``
        family.)

        Raises:
            QueueFull: a queue's ``max_depth`` or ``tenant_quota`` would be exceeded.
            StorageError: the store failed (``OutcomeUnknown`` if it may have committed).
        """

    @abc.abstractmethod
    def claim(
        self,
        queue: str,
        n: int,
        *,
        now: float,
        tenant: str | None = None,
        consumer: str | None = None,
    ) -> list[Claimed]:
        """Lease up to ``n`` ready messages; never waits for messages to arrive.

        Per key only the oldest unsettled message can be leased, and only
        while no earlier message of its key is in flight, waiting to be
        retried or (``on_key_failure="block"``) dead. Expired leases are
        counted as attempts here (dead-lettering messages that ran out of
        attempts) and due delayed messages become ready. Each lease gets a
        fresh token and expires ``lease`` seconds after ``now``.

        Args:
            queue: The queue to claim from.
            n: Most messages to lease (``n <= 0``: none).
            now: The broker's clock.
            tenant: Claim only this tenant's messages.
            consumer: The claiming worker's id (a journal records it); a
                backend without a journal ignores it.
        """

    @abc.abstractmethod
    def settle(self, settlements: Sequence[Settlement], *, now: float) -> list[bool]:
        """Apply a batch of outcomes to leased messages; per settlement, whether it held.

        ``False`` means that settlement's lease was lost (expired and claimed
        by someone else, or already settled) and it changed nothing. A lease
        that expired while nobody else claimed the message still holds. The
        settlements of one call should commit together (workers settle a
        round of finished handlers with one call); on an error nothing may be
        assumed settled, and the caller settles them one by one to find out.

        Raises:
            StorageError: the store failed; ``OutcomeUnknown`` if it may have committed.
        """

    @abc.abstractmethod
    def extend(self, receipt: Receipt, seconds: float, *, now: float) -> float | None:
        """Set the lease to expire ``seconds`` from now; the new expiry, or ``None`` if lost."""

    # -- conveniences built on settle ------------------------------------------
    def ack(
        self, receipts: Sequence[Receipt], *, now: float, durations_ms: Sequence[float | None]
    ) -> list[bool]:
        """Delete acknowledged messages; ``False`` for a receipt whose lease was lost."""
        return self.settle(
            [
                Settlement(r, "ack", duration_ms=ms)
                for r, ms in zip(receipts, durations_ms, strict=True)
            ],
            now=now,
        )

    def retry(
        self,
        receipt: Receipt,
        *,
        now: float,
        available_at: float,
        error_type: str | None,
        error: str | None,
        duration_ms: float | None,
    ) -> bool:
        """Make a leased message deliverable again at ``available_at``; ``False`` if lease lost."""
        settlement = Settlement(
            receipt,
            "retry",
            duration_ms=duration_ms,
            available_at=available_at,
            error_type=error_type,
            error=error,
        )
        return self.settle([settlement], now=now)[0]

    def dead_letter(
        self,
        receipt: Receipt,
        *,
        now: float,
        reason: str,
        error_type: str | None,
        traceback: str | None,
        duration_ms: float | None,
    ) -> bool:
        """Dead-letter a leased message (and copy it to the fallback queue); ``False`` if lost."""
        settlement = Settlement(
            receipt,
            "dead",
            duration_ms=duration_ms,
            reason=reason,
            error_type=error_type,
            error=traceback,
        )
        return self.settle([settlement], now=now)[0]

    def release(self, receipts: Sequence[Receipt], *, now: float) -> None:
        """Hand back leased but unstarted messages without spending an attempt."""
        if receipts:
            self.settle([Settlement(r, "release") for r in receipts], now=now)

    # -- operators -----------------------------------------------------------
    @abc.abstractmethod
    def dead_letters(
        self,
        queue: str,
        *,
        tenant: str | None = None,
        ids: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[StoredDeadLetter]:
        """Return dead letters of ``queue`` (oldest first), optionally filtered."""

    @abc.abstractmethod
    def redrive(
        self, queue: str, ids: Sequence[str] | None, *, now: float, tenant: str | None = None
    ) -> int:
        """Return dead letters (``ids``, or all) to their queue at attempt 0; how many moved.

        A redriven message of a key blocked by it goes back to the head of its key.
        """

    @abc.abstractmethod
    def purge(self, queue: str, ids: Sequence[str] | None, *, tenant: str | None = None) -> int:
        """Delete dead letters (``ids``, or all); how many were deleted."""

    @abc.abstractmethod
    def stats(self, queue: str | None = None, *, now: float, tenant: str | None = None) -> Stats:
        """Return a snapshot of one queue or all (this process's own outcomes included)."""

    def check(self) -> list[str]:
        """Run integrity checks; return problems found (empty = healthy; default: none known)."""
        return []

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections. Idempotent."""

    # -- wake-up hints ---------------------------------------------------------
    def wait_for_change(self, since: object | None, timeout: float) -> object:
        """Block up to ``timeout`` seconds until the store may have changed since ``since``.

        ``since`` is a token this method returned before (``None``: none yet).
        Returns the current token: equal to ``since`` means nothing was
        written since, by any process; a different one means something may
        have been. Idle workers call it (from one thread per broker) instead
        of polling every queue. The default cannot tell, so it sleeps briefly
        and always answers "maybe changed".
        """
        time.sleep(max(0.0, min(timeout, DEFAULT_CHANGE_WAIT)))
        return object()

    def ready_queues(self, queues: Sequence[str], *, now: float) -> Readiness:
        """Which of ``queues`` may have something to claim now, cheaply (no locks taken).

        The answer may name too many queues, never too few; ``next_due``
        says when the answer may change without a write (a delay ending, a
        lease expiring). The default names them all.
        """
        return Readiness(frozenset(queues))
