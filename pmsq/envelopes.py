"""Envelopes: a payload and its put options checked and encoded for the store, and back.

``build_envelope`` is the one place a put's options are validated (so
``put``, ``put_many`` and ``publish`` refuse the same things) and
``to_message`` the one place a stored envelope becomes a ``Message``.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import TYPE_CHECKING, Any

from pmsq.backends.base import Envelope
from pmsq.backends.control_family import Control
from pmsq.codec import BYTES_FORMAT, Codec, decode_headers, encode_headers
from pmsq.config import check_key, check_tenant
from pmsq.context import current_message
from pmsq.errors import ConfigurationError, PayloadTooLarge, SerializationError
from pmsq.ids import new_message_id
from pmsq.message import Message, to_epoch, utc_from_epoch

if TYPE_CHECKING:
    from pmsq.runtime import Runtime

__all__ = ["build_envelope", "to_message"]

_MAX_PRIORITY = 2**31 - 1
_MAX_DEDUP_LEN = 256


def _check_dedup_id(dedup_id: object) -> str | None:
    if dedup_id is None:
        return None
    if (
        not isinstance(dedup_id, str)
        or not dedup_id
        or len(dedup_id) > _MAX_DEDUP_LEN
        or not dedup_id.isprintable()
    ):
        raise ConfigurationError(
            f"invalid dedup_id {dedup_id!r}: use a non-empty printable string of at most "
            f"{_MAX_DEDUP_LEN} characters"
        )
    return dedup_id


def _check_priority(priority: object) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > _MAX_PRIORITY:
        raise ConfigurationError(
            f"priority must be an int between -{_MAX_PRIORITY} and {_MAX_PRIORITY}, "
            f"got {priority!r}"
        )
    return priority


def _check_delay(delay: object) -> float:
    if (
        isinstance(delay, bool)
        or not isinstance(delay, (int, float))
        or not math.isfinite(delay)
        or delay < 0
        or delay > 1e10
    ):
        raise ConfigurationError(f"delay must be a finite number of seconds >= 0, got {delay!r}")
    return float(delay)


def _expiry(runtime: Runtime, now: float, expires: object, expires_at: object) -> float | None:
    """The epoch at which a message expires, or ``None``; refused without ``Control``."""
    if expires is None and expires_at is None:
        return None
    if expires is not None and expires_at is not None:
        raise ConfigurationError("give expires= (seconds) or expires_at= (a time), not both")
    if expires is not None:
        if (
            isinstance(expires, bool)
            or not isinstance(expires, (int, float))
            or not 0 < expires <= 1e10
        ):
            raise ConfigurationError(
                f"expires must be a finite number of seconds > 0, got {expires!r}"
            )
        at = now + float(expires)
    else:
        at = to_epoch(expires_at, "expires_at")  # type: ignore[arg-type]
    Control.of(runtime.backend, "put(expires=)")
    return at


def build_envelope(
    runtime: Runtime,
    queue: str,
    payload: Any,
    *,
    key: str | None,
    tenant: str | None,
    priority: int,
    delay: float,
    not_before: dt.datetime | float | None,
    dedup_id: str | None,
    headers: dict[str, Any] | None,
    coalesce: bool,
    topic: str | None = None,
    correlation_id: str | None = None,
    message_id: str | None = None,
    expires: float | None = None,
    expires_at: dt.datetime | float | None = None,
) -> Envelope:
    """Validate options and encode ``payload`` into an ``Envelope``.

    Raises:
        ConfigurationError: an option is invalid.
        SerializationError: the payload cannot be encoded.
        PayloadTooLarge: the encoded payload exceeds ``max_payload_bytes``.
    """
    caps, backend_name = runtime.backend.capabilities, runtime.backend.name
    key = check_key(key)
    tenant = check_tenant(tenant)
    priority = _check_priority(priority)
    delay = _check_delay(delay)
    dedup_id = _check_dedup_id(dedup_id)
    if priority:
        caps.require(backend_name, "priorities")
    if dedup_id is not None:
        caps.require(backend_name, "dedup")
    if coalesce:
        caps.require(backend_name, "coalesce")
        if key is None:
            raise ConfigurationError(
                "coalesce=True needs a key: it replaces that key's newest waiting message"
            )
    now = runtime.clock.time()
    available_at = now + delay
    if not_before is not None:
        available_at = max(available_at, to_epoch(not_before))
    if available_at > now:
        caps.require(backend_name, "delays")
    expiry = _expiry(runtime, now, expires, expires_at)
    if isinstance(payload, (bytes, bytearray, memoryview)):
        data, fmt = bytes(payload), BYTES_FORMAT
    else:
        data, fmt = runtime.codec.encode(payload), runtime.codec.format
    if len(data) > runtime.max_payload_bytes:
        raise PayloadTooLarge(
            f"payload for queue {queue!r} is {len(data):,} bytes encoded, over "
            f"max_payload_bytes={runtime.max_payload_bytes:,}; store large documents elsewhere "
            "and put a reference, or raise max_payload_bytes in connect()"
        )
    mid = message_id or new_message_id(now)
    if runtime.put_hooks:
        headers = dict(headers or {})
        for hook in runtime.put_hooks:
            hook(queue, mid, topic, headers)
    parent = current_message.get()
    if parent is not None:
        correlation = parent.correlation_id or parent.id
        causation: str | None = parent.id
    else:
        correlation, causation = correlation_id or mid, None
    return Envelope(
        id=mid,
        queue=queue,
        data=data,
        format=fmt,
        key=key,
        tenant=tenant,
        priority=priority,
        available_at=available_at,
        enqueued_at=now,
        headers=encode_headers(headers),
        dedup_id=dedup_id,
        topic=topic,
        correlation_id=correlation,
        causation_id=causation,
        coalesce=bool(coalesce),
        expires_at=expiry,
    )


def to_message(codec: Codec, env: Envelope, attempt: int, *, lenient: bool = False) -> Message:
    """Rebuild the ``Message`` of a stored envelope.

    Args:
        codec: The broker's codec.
        env: The stored envelope.
        attempt: Deliveries so far, this one included.
        lenient: Show an undecodable body as its bytes instead of raising:
            peeking and listing dead letters must work exactly when a body is
            damaged or written by another codec, because that is when an
            operator looks.

    Raises:
        SerializationError: the body cannot be decoded (and ``lenient`` is False).
    """
    if env.format == BYTES_FORMAT:
        payload: Any = env.data
    elif lenient:
        try:
            payload = _decode(codec, env)
        except SerializationError:
            payload = env.data
    else:
        payload = _decode(codec, env)
    return Message(
        id=env.id,
        queue=env.queue,
        payload=payload,
        key=env.key,
        tenant=env.tenant,
        priority=env.priority,
        headers=decode_headers(env.headers),
        attempt=attempt,
        enqueued_at=utc_from_epoch(env.enqueued_at),
        dedup_id=env.dedup_id,
        topic=env.topic,
        correlation_id=env.correlation_id,
        causation_id=env.causation_id,
    )


def _decode(codec: Codec, env: Envelope) -> Any:
    if env.format != codec.format:
        raise SerializationError(
            f"message {env.id} was written with codec {env.format!r}, but this broker "
            f"uses {codec.format!r}; connect with that codec to read it"
        )
    return codec.decode(env.data)
