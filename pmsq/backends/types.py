"""The values that cross the backend seam: what is stored, leased, settled and moved.

Frozen ``attrs`` classes, shared by every backend and by the broker. They are
re-exported from :mod:`pmsq.backends` (and :mod:`pmsq.backends.base`), so a
plugin imports them from one place.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

__all__ = [
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


@attrs.frozen
class Envelope:
    """One message ready to store: payload already encoded, options validated.

    ``expires_at`` (epoch seconds, or ``None``: never) is honoured only by
    a backend with the ``Control`` family: a message found expired when it
    would be claimed becomes a dead letter with reason ``expired``.
    """

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
    expires_at: float | None = None


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
    """One outcome for :meth:`Backend.settle <pmsq.backends.Backend.settle>`.

    ``action`` is one of:

    - ``"ack"``: delete the message (``duration_ms`` is the handler's time).
    - ``"retry"``: deliverable again at ``available_at``, with ``error_type``
      and ``error`` recorded (``error_type=None``: not counted as a failure,
      as for ``Snooze``).
    - ``"dead"``: dead-letter it for ``reason``, with ``error_type`` and the
      traceback in ``error``, and copy it to the queue's fallback.
    - ``"release"``: hand back a claimed message whose handler never started,
      without spending an attempt (the claim's attempt is undone).
    - ``"snooze"`` (backends with the ``Control`` family): deliverable again
      at ``available_at`` like a retry, but the attempt is not counted (the
      next delivery's ``attempt`` is this one's again) and it is no failure;
      the message keeps its key's line (later messages of the key wait).

    ``failed`` is True only when a handler raised an exception (not
    ``Retry``, ``Reject`` or ``Snooze``): it feeds the queue's circuit
    breaker (``QueueConfig.circuit``).
    """

    receipt: Receipt
    action: Literal["ack", "retry", "dead", "release", "snooze"]
    duration_ms: float | None = None
    available_at: float = 0.0
    reason: str = ""
    error_type: str | None = None
    error: str | None = None
    failed: bool = False


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
            ``redriven``, ``purged``; with message control ``cancelled``,
            ``rescheduled``, ``expired``, ``snoozed``, and for a paused
            scope (``message_id`` ``""``) ``paused``, ``resumed``,
            ``circuit_opened``, ``circuit_closed``.
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


@attrs.frozen
class Readiness:
    """Which queues may have work, for an idle consumer deciding where to claim.

    Attributes:
        queues: Queues where ``claim`` may return something now. A superset is
            allowed (a claim then returns nothing); a queue with a claimable
            message must never be left out.
        next_due: The earliest time (the caller's clock) something not in
            ``queues`` may become claimable without another write to the
            store: a delay or a retry backoff ending, a lease expiring.
            ``None``: nothing is scheduled.
    """

    queues: frozenset[str]
    next_due: float | None = None


@attrs.frozen
class PauseRecord:
    """A stored pause of a queue, of one tenant of it, or of one key (``Control`` family).

    The scope is ``(queue, tenant, key)``: ``tenant=None, key=None`` holds
    the whole queue; ``key`` with ``tenant=None`` holds the tenantless key.
    At most one pause exists per scope (pausing again replaces it).

    Attributes:
        queue: The paused queue.
        tenant: The paused tenant, or ``None``.
        key: The paused key (of ``tenant``), or ``None``.
        until: Epoch seconds at which it lifts by itself, or ``None`` (until resumed).
        reason: Why (shown in stats, the monitor and ``pmsq trace``).
        since: Epoch seconds at which it was (last) set.
        circuit: True when the circuit breaker opened it (``until`` is then
            when the half-open probe may go through).
    """

    queue: str
    tenant: str | None = None
    key: str | None = None
    until: float | None = None
    reason: str = ""
    since: float = 0.0
    circuit: bool = False

    @property
    def scope(self) -> tuple[str, str | None, str | None]:
        """``(queue, tenant, key)``: what the pause holds."""
        return (self.queue, self.tenant, self.key)
