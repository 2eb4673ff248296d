"""The storage interface every backend implements.

A backend is small and synchronous: the thread Worker calls it directly and
the AsyncWorker through ``anyio.to_thread``. It never blocks waiting for
messages: ``claim`` returns what is ready now, possibly nothing. Everything a
guarantee of DESIGN.md depends on (per-key order, leases, attempts, dedup,
dead letters, fan-out atomicity) happens inside the backend's transactions,
so that several processes sharing one store agree.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, Literal

import attrs

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
    "Receipt",
    "Settlement",
    "StoredDeadLetter",
    "StoredMessage",
]


@attrs.frozen
class Capabilities:
    """What a backend can do. A missing capability raises ``ConfigurationError`` when used.

    Attributes:
        per_key_fifo: Strict per-key order (False: order per shard only).
        priorities: ``priority`` is honoured.
        delays: ``delay`` / ``not_before`` / retry backoff are exact.
        dedup: ``dedup_id`` is enforced by the store.
        coalesce: ``coalesce=True`` puts are supported.
        rate_limits: ``RateLimit`` is enforced at claim time.
        tenant_fairness: Claims rotate over tenants.
        transactional_put: ``put(..., connection=)`` writes in the caller's transaction.
        exact_stats: Stats counts are exact.
        history: The store keeps a message journal (``Backend.history``,
            ``pmsq trace``). Optional: it defaults to False, and a backend
            without it needs no code for it.
    """

    per_key_fifo: bool = True
    priorities: bool = True
    delays: bool = True
    dedup: bool = True
    coalesce: bool = True
    rate_limits: bool = True
    tenant_fairness: bool = True
    transactional_put: bool = True
    exact_stats: bool = True
    history: bool = False

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


@attrs.frozen
class Envelope:
    """One message ready to store: payload already encoded, options validated."""

    id: str
    queue: str
    data: bytes
    format: str
    key: str | None
    tenant: str | None
    priority: int
    available_at: float
    enqueued_at: float
    headers: str | None
    dedup_id: str | None
    topic: str | None
    correlation_id: str | None
    causation_id: str | None
    coalesce: bool = False


@attrs.frozen
class Receipt:
    """Proof of a lease: which message, which queue, and the lease token.

    ``handle`` is the backend's own locator (a row id, a delivery tag).
    """

    queue: str
    message_id: str
    token: str
    handle: Any = None
    tenant: str | None = None


@attrs.frozen
class Settlement:
    """One settlement for :meth:`Backend.settle_many`: what becomes of a leased message.

    ``action`` is ``"ack"`` (delete it), ``"retry"`` (deliverable again at
    ``available_at``, with ``error_type``/``error`` recorded) or ``"dead"``
    (dead-letter it for ``reason``, with ``error_type`` and the traceback in
    ``error``).
    """

    receipt: Receipt
    action: Literal["ack", "retry", "dead"]
    duration_ms: float | None = None
    available_at: float = 0.0
    reason: str = ""
    error_type: str | None = None
    error: str | None = None


@attrs.frozen
class Claimed:
    """A leased message as stored; the broker turns it into a ``Message`` and a ``Delivery``."""

    receipt: Receipt
    envelope: Envelope
    attempt: int
    lease_expires: float
    corrupt: bool = False


@attrs.frozen
class HistoryEvent:
    """One journal event: something that happened to a message, when, and where.

    Attributes:
        at: Epoch seconds (the clock of the process that recorded it).
        message_id: The message.
        queue: Its queue.
        tenant: Its tenant, or ``None``.
        key: Its key, or ``None``.
        correlation_id: The id of the message that started its chain.
        event: ``put``, ``dedup_hit``, ``coalesced``, ``delivered``, ``acked``,
            ``retried``, ``lease_expired``, ``dead_lettered``, ``released``,
            ``redriven`` or ``purged``.
        attempt: The delivery attempt the event belongs to, if any.
        worker: The consumer that claimed it (deliveries by a worker), if known.
        process: ``host:pid`` of the process that recorded the event.
        detail: Event specifics: ``topic``, ``siblings``, ``causation_id``,
            ``delay``, ``duration_ms``, ``error_type``, ``error``, ``reason``...
    """

    at: float
    message_id: str
    queue: str
    tenant: str | None
    key: str | None
    correlation_id: str | None
    event: str
    attempt: int | None = None
    worker: str | None = None
    process: str | None = None
    detail: dict[str, Any] = attrs.field(factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``detail`` flattened into it)."""
        out = attrs.asdict(self)
        detail = out.pop("detail")
        return {**out, **detail}


@attrs.frozen
class StoredDeadLetter:
    """A dead letter as stored."""

    envelope: Envelope
    attempts: int
    reason: str
    error_type: str | None
    traceback: str | None
    dead_at: float


@attrs.frozen
class StoredMessage:
    """A message exactly as stored, for moving it between stores (``pmsq migrate``).

    Attributes:
        envelope: The message (its id, payload bytes and options).
        state: ``"pending"`` (ready, delayed or waiting for a retry),
            ``"in_flight"`` (leased right now) or ``"dead"``.
        attempts: Deliveries so far (the next delivery is ``attempts + 1``).
        error_type: The last failure's type (pending) or the dead letter's.
        error: The last error text, or the dead letter's traceback.
        dead_reason: Why it was dead-lettered (dead only).
        dead_at: When it was dead-lettered, epoch seconds (dead only).
        holds_key: A dead letter that still blocks its key
            (``on_key_failure="block"``).
    """

    envelope: Envelope
    state: Literal["pending", "in_flight", "dead"]
    attempts: int = 0
    error_type: str | None = None
    error: str | None = None
    dead_reason: str | None = None
    dead_at: float | None = None
    holds_key: bool = False


@attrs.frozen
class DedupRecord:
    """A remembered ``dedup_id``: puts with it return ``message_id`` until ``expires_at``."""

    queue: str
    tenant: str | None
    dedup_id: str
    message_id: str
    expires_at: float | None


class Backend(abc.ABC):
    """A message store. Implementations must be safe to call from several threads.

    Required methods hold every guarantee; optional ones have defaults that
    are correct but maybe slower or less informative.
    """

    #: What this backend supports.
    capabilities: Capabilities = Capabilities()
    #: Human-readable name used in errors ("SQLite", "PostgreSQL").
    name: str = "backend"

    # -- configuration -------------------------------------------------------
    @abc.abstractmethod
    def declare_queue(self, config: QueueConfig) -> None:
        """Create or update a queue's stored configuration."""

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
    def queue_config(self, name: str) -> QueueConfig | None:
        """Return a queue's stored configuration, or ``None`` if undeclared."""

    @abc.abstractmethod
    def list_queues(self) -> list[QueueConfig]:
        """Return every declared queue."""

    @abc.abstractmethod
    def bind(self, pattern: str, queue: str) -> None:
        """Persist a topic subscription (idempotent)."""

    @abc.abstractmethod
    def unbind(self, pattern: str, queue: str) -> bool:
        """Remove a topic subscription; return whether it existed."""

    @abc.abstractmethod
    def bindings(self) -> list[tuple[str, str]]:
        """Return all ``(pattern, queue)`` subscriptions."""

    # -- the message lifecycle ----------------------------------------------
    @abc.abstractmethod
    def put_many(
        self, envelopes: Sequence[Envelope], *, now: float, connection: Any = None
    ) -> list[str]:
        """Store envelopes atomically (all or none) and return their ids.

        A dedup hit returns the first message's id; a coalescing put returns
        the id of the message whose payload it replaced. With ``connection``
        the write happens inside the caller's open transaction and is never
        committed here.

        Raises:
            QueueFull: a queue's ``max_depth`` or ``tenant_quota`` would be exceeded.
            StorageError: the store failed (``OutcomeUnknown`` if it may have committed).
        """

    @abc.abstractmethod
    def claim(self, queue: str, n: int, *, now: float, tenant: str | None = None) -> list[Claimed]:
        """Lease up to ``n`` ready messages; never waits for messages to arrive.

        Expired leases are counted as attempts here (dead-lettering messages
        that ran out of attempts) and due delayed messages become ready.
        A backend declaring the ``history`` capability also accepts
        ``consumer=`` (the claiming worker's id, for its journal); pmsq passes
        it to no other backend.
        """

    @abc.abstractmethod
    def ack(
        self, receipts: Sequence[Receipt], *, now: float, durations_ms: Sequence[float | None]
    ) -> list[bool]:
        """Delete acknowledged messages; ``False`` for a receipt whose lease was lost."""

    @abc.abstractmethod
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

    @abc.abstractmethod
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

    def settle_many(self, settlements: Sequence[Settlement], *, now: float) -> list[bool]:
        """Apply several settlements at once; per settlement, ``False`` if its lease was lost.

        Workers settle what their handlers finished together through this
        call. The default acks in one :meth:`ack` call and retries and
        dead-letters one by one; a backend that can commit them all in one
        transaction should override it. On an error nothing may be assumed
        settled: the caller settles them one by one to find out.
        """
        done = [False] * len(settlements)
        acks = [i for i, s in enumerate(settlements) if s.action == "ack"]
        if acks:
            oks = self.ack(
                [settlements[i].receipt for i in acks],
                now=now,
                durations_ms=[settlements[i].duration_ms for i in acks],
            )
            for i, ok in zip(acks, oks, strict=True):
                done[i] = ok
        for i, s in enumerate(settlements):
            if s.action == "retry":
                done[i] = self.retry(
                    s.receipt,
                    now=now,
                    available_at=s.available_at,
                    error_type=s.error_type,
                    error=s.error,
                    duration_ms=s.duration_ms,
                )
            elif s.action == "dead":
                done[i] = self.dead_letter(
                    s.receipt,
                    now=now,
                    reason=s.reason,
                    error_type=s.error_type,
                    traceback=s.error,
                    duration_ms=s.duration_ms,
                )
        return done

    @abc.abstractmethod
    def release(self, receipts: Sequence[Receipt], *, now: float) -> None:
        """Hand back leased but unstarted messages without spending an attempt."""

    @abc.abstractmethod
    def extend(self, receipt: Receipt, seconds: float, *, now: float) -> float | None:
        """Set the lease to expire ``seconds`` from now; the new expiry, or ``None`` if lost."""

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
        """Return dead letters to their queue at attempt 0; how many were redriven."""

    @abc.abstractmethod
    def purge(self, queue: str, ids: Sequence[str] | None, *, tenant: str | None = None) -> int:
        """Delete dead letters; how many were deleted."""

    @abc.abstractmethod
    def stats(self, queue: str | None = None, *, now: float, tenant: str | None = None) -> Stats:
        """Return a snapshot of one queue or all."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections. Idempotent."""

    # -- optional -----------------------------------------------------------
    def set_history(self, retention: float | None) -> None:
        """Keep journal events for ``retention`` seconds; ``None`` keeps no journal.

        Raises:
            ConfigurationError: a retention was asked of a backend without ``history``.
        """
        if retention is not None:
            self.capabilities.require(self.name, "history")

    def history(
        self,
        *,
        message_id: str | None = None,
        dedup_id: str | None = None,
        correlation_id: str | None = None,
        key: str | None = None,
        queue: str | None = None,
        tenant: str | None = None,
        limit: int = 1000,
    ) -> list[HistoryEvent]:
        """Journal events, oldest first: of a message, a dedup id, a chain, or a key.

        Filters combine; ``dedup_id`` matches the messages put with it.
        Returns at most the newest ``limit`` events.

        Raises:
            ConfigurationError: the backend keeps no history (capability ``history``).
        """
        self.capabilities.require(self.name, "history")
        return []

    def peek(
        self, queue: str, n: int, *, tenant: str | None = None
    ) -> list[tuple[Envelope, int, str]]:
        """Read up to ``n`` waiting messages without claiming: ``(envelope, attempt, state)``."""
        return []

    def next_due(self, queue: str, *, now: float) -> float | None:
        """Earliest time something in ``queue`` becomes claimable, if known (a wake-up hint)."""
        return None

    def change_token(self) -> object:
        """A cheap value that changes when another process may have written (a wake-up hint)."""
        return None

    def has_ready(self, queue: str, *, now: float, tenant: str | None = None) -> bool:
        """Whether ``claim`` would likely return something (a cheap, lock-free probe)."""
        return True

    def check(self) -> list[str]:
        """Run integrity checks; return problems found (empty = healthy)."""
        return []

    def get_meta(self, key: str) -> str | None:
        """Return a stored setting (alert rules, schema version), or ``None`` if unset.

        Raises:
            ConfigurationError: the backend cannot store settings.
        """
        raise ConfigurationError(f"the {self.name} backend cannot store settings (get_meta)")

    def set_meta(self, key: str, value: str | None) -> None:
        """Store a setting every process sees; ``None`` removes it.

        Raises:
            ConfigurationError: the backend cannot store settings, or ``key`` is reserved.
        """
        raise ConfigurationError(f"the {self.name} backend cannot store settings (set_meta)")

    # -- moving stores (pmsq migrate) -----------------------------------------
    def export_messages(
        self, queue: str, *, after: str | None = None, limit: int = 500
    ) -> tuple[list[StoredMessage], str | None]:
        """Read up to ``limit`` stored messages of ``queue`` (pending, in flight, dead).

        Messages come in put order, each key's messages in their delivery
        order. Reading changes nothing.

        Args:
            queue: The queue to read.
            after: The cursor returned by the previous page (``None``: start).
            limit: Largest page size.

        Returns:
            The page and the cursor of the next page (``None`` after the last page).

        Raises:
            ConfigurationError: the backend cannot export messages.
        """
        raise ConfigurationError(
            f"the {self.name} backend cannot export messages (export_messages); "
            "it cannot be the source of pmsq migrate"
        )

    def import_messages(self, records: Sequence[StoredMessage], *, now: float) -> int:
        """Store exported messages as they were, atomically; return how many were new.

        Ids are kept, so importing a record whose id is already stored skips
        it: importing the same pages again is harmless. Each key's records
        join the tail of its line in the order given. In-flight records
        become pending (their lease belonged to the old store). No dedup,
        quota or fallback logic runs.

        Raises:
            ConfigurationError: the backend cannot import messages.
        """
        raise ConfigurationError(
            f"the {self.name} backend cannot import messages (import_messages); "
            "it cannot be the destination of pmsq migrate"
        )

    def export_dedup(self, queue: str, *, now: float) -> list[DedupRecord]:
        """Return the dedup ids of ``queue`` still remembered at ``now``.

        Raises:
            ConfigurationError: the backend cannot export dedup records.
        """
        raise ConfigurationError(f"the {self.name} backend cannot export dedup records")

    def import_dedup(self, records: Sequence[DedupRecord]) -> int:
        """Remember dedup ids (one already remembered is kept); return how many were new.

        Raises:
            ConfigurationError: the backend cannot import dedup records.
        """
        raise ConfigurationError(f"the {self.name} backend cannot import dedup records")
