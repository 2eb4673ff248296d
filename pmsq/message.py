"""Message values: ``Message`` (what a handler receives), ``NewMessage`` (what
``put_many`` takes) and ``DeadLetter`` (what the dead-letter store holds)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import attrs

from pmsq.errors import ConfigurationError

__all__ = ["DeadLetter", "Message", "NewMessage", "to_epoch", "utc_from_epoch"]


def utc_from_epoch(seconds: float) -> dt.datetime:
    """Return an aware UTC datetime for epoch ``seconds``."""
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)


def to_epoch(value: dt.datetime | float | int, what: str = "not_before") -> float:
    """Convert an aware datetime or epoch seconds to epoch seconds.

    Args:
        value: The time.
        what: The argument's name, for the error message.

    Raises:
        ConfigurationError: for a naive datetime or a non-finite number.
    """
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ConfigurationError(
                f"{what} must be timezone-aware (got naive {value!r}); "
                "use datetime.now(timezone.utc) or epoch seconds"
            )
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigurationError(
            f"{what} must be an aware datetime or epoch seconds, got {value!r}"
        )
    return float(value)


@attrs.frozen
class Message:
    """A message as delivered to a handler. Immutable; ``id`` is stable across redeliveries.

    Attributes:
        id: Unique id, the same on every delivery.
        queue: Queue it was delivered from.
        payload: Decoded payload.
        key: Ordering key (``None`` = unordered).
        tenant: Tenant id (``None`` = no tenant).
        priority: Higher is delivered first (never overriding key order).
        headers: String-keyed metadata.
        attempt: 1 on the first delivery, counting every delivery.
        enqueued_at: When it was put (aware UTC).
        dedup_id: The dedup id given at put, if any.
        topic: The topic it was published on, if any.
        correlation_id: Id of the message that started the chain.
        causation_id: Id of the message being handled when this one was put.
    """

    id: str
    queue: str
    payload: Any
    key: str | None = None
    tenant: str | None = None
    priority: int = 0
    headers: dict[str, Any] = attrs.field(factory=dict)
    attempt: int = 1
    enqueued_at: dt.datetime = attrs.field(factory=lambda: dt.datetime.now(dt.UTC))
    dedup_id: str | None = None
    topic: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None


@attrs.frozen
class NewMessage:
    """One message for ``Queue.put_many``, with the same options as ``Queue.put``.

    Args:
        payload: The payload (JSON-encodable by default; bytes pass through).
        key: Ordering key.
        tenant: Tenant id.
        priority: Higher first.
        delay: Seconds to hold the message back.
        not_before: Aware datetime or epoch seconds before which it is not delivered.
        dedup_id: Deduplication id.
        headers: Metadata.
        coalesce: Replace the payload of the newest undelivered message of ``key``.
        expires: Seconds from now after which it is no longer delivered.
        expires_at: Or an aware datetime or epoch seconds.
    """

    payload: Any
    key: str | None = None
    tenant: str | None = None
    priority: int = 0
    delay: float = 0
    not_before: dt.datetime | float | None = None
    dedup_id: str | None = None
    headers: dict[str, Any] | None = None
    coalesce: bool = False
    expires: float | None = None
    expires_at: dt.datetime | float | None = None


@attrs.frozen
class DeadLetter:
    """A dead-lettered message and why it died.

    Attributes:
        message: The message as last delivered (``attempt`` = deliveries made).
        reason: Why it was dead-lettered.
        error_type: Qualified name of the last exception, if any.
        traceback: Formatted traceback of the last failure, if any.
        attempts: Deliveries made.
        dead_at: When it was dead-lettered (aware UTC).
    """

    message: Message
    reason: str
    error_type: str | None
    traceback: str | None
    attempts: int
    dead_at: dt.datetime
