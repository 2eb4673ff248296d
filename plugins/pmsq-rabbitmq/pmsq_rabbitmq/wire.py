"""How an ``Envelope`` travels as an AMQP message, and back.

The body is the encoded payload, untouched. Everything else pmsq needs rides
in one JSON header, ``pmsq`` (pika cannot send floats as header values, and
one JSON document is easier to evolve than a dozen typed headers). Dead
letters carry a second one, ``pmsq-dead``.

Attempts: ``spent`` in the header counts the deliveries made before this copy
was published (a delayed retry is a new copy); the quorum queue adds
``x-delivery-count`` (returns of this copy: lease expiries, crashes). A
delivery's attempt is ``spent + x-delivery-count + 1``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

import attrs
import pika  # type: ignore[import-untyped]

from pmsq.backends.base import Envelope, StoredDeadLetter
from pmsq.codec import BYTES_FORMAT
from pmsq.ids import new_message_id

__all__ = ["DeadInfo", "Incoming", "dead_properties", "decode", "key_route", "properties"]

META = "pmsq"
DEAD = "pmsq-dead"
# A header must fit in one AMQP frame (128 KiB by default) with the rest.
_MAX_TRACEBACK = 32_000


def key_route(tenant: str | None, key: str) -> str:
    """The consistent-hash routing key of a (tenant, key): short, stable, evenly spread."""
    raw = f"{tenant or ''}\x00{key}".encode()
    return hashlib.sha1(raw, usedforsecurity=False).hexdigest()


def _meta(env: Envelope, spent: int) -> str:
    return json.dumps(
        {
            "format": env.format,
            "key": env.key,
            "tenant": env.tenant,
            "available_at": env.available_at,
            "enqueued_at": env.enqueued_at,
            "headers": env.headers,
            "topic": env.topic,
            "correlation_id": env.correlation_id,
            "causation_id": env.causation_id,
            "spent": spent,
        },
        separators=(",", ":"),
    )


def properties(env: Envelope, *, spent: int) -> Any:
    """AMQP properties of a message: persistent, id, pmsq header."""
    return pika.BasicProperties(
        message_id=env.id,
        delivery_mode=2,
        timestamp=int(env.enqueued_at),
        headers={META: _meta(env, spent)},
    )


@attrs.frozen
class DeadInfo:
    """Why a dead letter died."""

    reason: str
    error_type: str | None
    traceback: str | None
    attempts: int
    dead_at: float


def dead_properties(env: Envelope, info: DeadInfo) -> Any:
    """Properties of a dead letter: the message's own plus ``pmsq-dead``."""
    props = properties(env, spent=info.attempts)
    tb = info.traceback
    if tb is not None and len(tb) > _MAX_TRACEBACK:
        tb = "...\n" + tb[-_MAX_TRACEBACK:]
    props.headers[DEAD] = json.dumps(
        {
            "reason": info.reason[:_MAX_TRACEBACK],
            "error_type": info.error_type,
            "traceback": tb,
            "attempts": info.attempts,
            "dead_at": info.dead_at,
        },
        separators=(",", ":"),
    )
    return props


@attrs.frozen
class Incoming:
    """A message as it came out of a queue."""

    envelope: Envelope
    spent: int
    returns: int
    headers: dict[str, Any]

    @property
    def attempt(self) -> int:
        """The attempt number of this delivery (before any local re-handout)."""
        return self.spent + self.returns + 1


def decode(queue: str, props: Any, body: bytes) -> Incoming:
    """Rebuild the envelope of a delivery.

    A message published without pmsq's header (by a plain AMQP client) is
    taken as a bytes payload with defaults, so it can still be handled or
    dead-lettered instead of jamming the queue.
    """
    headers: dict[str, Any] = dict(props.headers or {})
    try:
        meta = json.loads(headers.get(META) or "{}")
        if not isinstance(meta, dict):
            meta = {}
    except (TypeError, ValueError):
        meta = {}
    now = dt.datetime.now(dt.UTC).timestamp()
    enqueued = float(meta.get("enqueued_at", props.timestamp or now))
    mid = props.message_id or new_message_id(enqueued)
    env = Envelope(
        id=str(mid),
        queue=queue,
        data=bytes(body),
        format=str(meta.get("format", BYTES_FORMAT)),
        key=meta.get("key"),
        tenant=meta.get("tenant"),
        priority=0,
        available_at=float(meta.get("available_at", 0.0)),  # a foreign message is due
        enqueued_at=enqueued,
        headers=meta.get("headers"),
        dedup_id=None,
        topic=meta.get("topic"),
        correlation_id=meta.get("correlation_id") or str(mid),
        causation_id=meta.get("causation_id"),
    )
    returns = headers.get("x-delivery-count", 0)
    return Incoming(
        envelope=env,
        spent=int(meta.get("spent", 0)),
        returns=int(returns) if isinstance(returns, int) else 0,
        headers=headers,
    )


def stored_dead_letter(incoming: Incoming, *, delivery_limit: int) -> StoredDeadLetter:
    """A dead letter as pmsq reports it, whether pmsq or the broker dead-lettered it."""
    raw = incoming.headers.get(DEAD)
    if raw:
        info = json.loads(raw)
        return StoredDeadLetter(
            envelope=incoming.envelope,
            attempts=int(info["attempts"]),
            reason=str(info["reason"]),
            error_type=info.get("error_type"),
            traceback=info.get("traceback"),
            dead_at=float(info["dead_at"]),
        )
    # Dead-lettered by the broker itself: the quorum queue's delivery limit ran
    # out (a consumer kept dying, or its lease expired each time).
    deaths = incoming.headers.get("x-death") or [{}]
    first = deaths[0] if isinstance(deaths, list) and deaths else {}
    when = first.get("time") if isinstance(first, dict) else None
    dead_at = when.timestamp() if isinstance(when, dt.datetime) else incoming.envelope.enqueued_at
    why = incoming.headers.get("x-first-death-reason", "delivery_limit")
    return StoredDeadLetter(
        envelope=incoming.envelope,
        attempts=incoming.spent + delivery_limit + 1,
        reason=(
            f"RabbitMQ dead-lettered it ({why}): returned more than {delivery_limit} times "
            "without an ack (consumers died or leases expired)"
        ),
        error_type=None,
        traceback=None,
        dead_at=dead_at,
    )
