"""``Queue``: a handle on one queue (optionally scoped to one tenant)."""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pmsq.backends.base import Claimed, Envelope
from pmsq.backends.families import Inspect
from pmsq.codec import BYTES_FORMAT, encode_headers
from pmsq.config import QueueConfig, check_key, check_tenant
from pmsq.context import current_message
from pmsq.delivery import Delivery
from pmsq.errors import ConfigurationError, Empty, PayloadTooLarge
from pmsq.ids import new_message_id
from pmsq.message import Message, NewMessage, to_epoch

if TYPE_CHECKING:
    from pmsq.broker import Broker

__all__ = ["Queue"]

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


def build_envelope(
    broker: Broker,
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
) -> Envelope:
    """Validate options and encode ``payload`` into an ``Envelope``.

    Raises:
        ConfigurationError: an option is invalid.
        SerializationError: the payload cannot be encoded.
        PayloadTooLarge: the encoded payload exceeds ``max_payload_bytes``.
    """
    caps, backend_name = broker.backend.capabilities, broker.backend.name
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
    now = broker.clock.time()
    available_at = now + delay
    if not_before is not None:
        available_at = max(available_at, to_epoch(not_before))
    if available_at > now:
        caps.require(backend_name, "delays")
    if isinstance(payload, (bytes, bytearray, memoryview)):
        data, fmt = bytes(payload), BYTES_FORMAT
    else:
        data, fmt = broker.codec.encode(payload), broker.codec.format
    if len(data) > broker.max_payload_bytes:
        raise PayloadTooLarge(
            f"payload for queue {queue!r} is {len(data):,} bytes encoded, over "
            f"max_payload_bytes={broker.max_payload_bytes:,}; store large documents elsewhere "
            "and put a reference, or raise max_payload_bytes in connect()"
        )
    mid = message_id or new_message_id(now)
    if broker.put_hooks:
        headers = dict(headers or {})
        for hook in broker.put_hooks:
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
    )


class Queue:
    """A handle on one queue. Get it from ``broker.queue(name)`` or ``declare_queue``.

    A handle from a tenant handle (``broker.tenant("acme").queue(...)``) puts
    and gets only that tenant's messages.
    """

    def __init__(self, broker: Broker, name: str, *, tenant: str | None = None) -> None:
        self._broker = broker
        self.name = name
        self.tenant = tenant

    def __repr__(self) -> str:
        scope = f" tenant={self.tenant!r}" if self.tenant else ""
        return f"<Queue {self.name!r}{scope}>"

    @property
    def config(self) -> QueueConfig:
        """The queue's stored configuration."""
        return self._broker.queue_config(self.name)

    def _tenant_for(self, tenant: str | None) -> str | None:
        if self.tenant is None:
            return tenant
        if tenant is not None and tenant != self.tenant:
            raise ConfigurationError(
                f"this handle is scoped to tenant {self.tenant!r}; it cannot use tenant {tenant!r}"
            )
        return self.tenant

    def _connection(self, connection: Any) -> Any:
        if connection is not None:
            self._broker.backend.capabilities.require(
                self._broker.backend.name, "transactional_put"
            )
        return connection

    def put(
        self,
        payload: Any,
        *,
        key: str | None = None,
        tenant: str | None = None,
        priority: int = 0,
        delay: float = 0,
        not_before: dt.datetime | float | None = None,
        dedup_id: str | None = None,
        headers: dict[str, Any] | None = None,
        coalesce: bool = False,
        connection: Any = None,
    ) -> str:
        """Store one message; return its id once it is durable.

        Args:
            payload: JSON-encodable value (or bytes, stored as-is).
            key: Ordering key: same-key messages are delivered one at a time, in put order.
            tenant: Tenant id.
            priority: Higher is delivered first (never overriding key order).
            delay: Seconds before it may be delivered.
            not_before: Aware datetime or epoch seconds before which it is not delivered.
            dedup_id: A repeat within the queue's dedup window returns the first id.
            headers: String-keyed JSON metadata.
            coalesce: Replace the payload of ``key``'s newest undelivered message instead.
            connection: The app's open ``sqlite3.Connection`` to the same file:
                the message commits (or rolls back) with the app's transaction.

        Returns:
            The message id (the earlier one on a dedup hit or coalesce).

        Raises:
            ConfigurationError: invalid option, or a tenant outside this handle's scope.
            SerializationError: payload or headers cannot be encoded.
            PayloadTooLarge: encoded payload over ``max_payload_bytes``.
            QueueFull: ``max_depth`` or ``tenant_quota`` reached.
            StorageError: the store failed (``OutcomeUnknown``: maybe stored).
        """
        env = build_envelope(
            self._broker,
            self.name,
            payload,
            key=key,
            tenant=self._tenant_for(tenant),
            priority=priority,
            delay=delay,
            not_before=not_before,
            dedup_id=dedup_id,
            headers=headers,
            coalesce=coalesce,
        )
        return self._broker._store([env], connection=self._connection(connection))[0]

    def put_many(self, items: Iterable[Any | NewMessage], *, connection: Any = None) -> list[str]:
        """Store several messages in one transaction: all or none.

        Args:
            items: ``NewMessage`` values or plain payloads.
            connection: As for :meth:`put`.

        Returns:
            Their ids, in order.

        Raises:
            The errors of :meth:`put`; on any error nothing is stored.
        """
        envs: list[Envelope] = []
        for item in items:
            m = item if isinstance(item, NewMessage) else NewMessage(item)
            envs.append(
                build_envelope(
                    self._broker,
                    self.name,
                    m.payload,
                    key=m.key,
                    tenant=self._tenant_for(m.tenant),
                    priority=m.priority,
                    delay=m.delay,
                    not_before=m.not_before,
                    dedup_id=m.dedup_id,
                    headers=m.headers,
                    coalesce=m.coalesce,
                )
            )
        if not envs:
            return []
        return self._broker._store(envs, connection=self._connection(connection))

    def _claim(self, n: int, consumer: str | None = None) -> list[Claimed]:
        backend = self._broker.backend
        now = self._broker.clock.time()
        return backend.claim(self.name, n, now=now, tenant=self.tenant, consumer=consumer)

    def get(self, timeout: float | None = 5.0) -> Delivery:
        """Lease the next message, waiting up to ``timeout`` seconds (``None``: forever).

        Returns:
            A ``Delivery``; use it as a context manager or settle it yourself.

        Raises:
            Empty: nothing became available in time.
        """
        batch = self.get_many(1, timeout=timeout)
        if not batch:
            raise Empty(f"no message in queue {self.name!r} within {timeout}s")
        return batch[0]

    def get_many(self, n: int, timeout: float | None = 1.0) -> list[Delivery]:
        """Lease up to ``n`` messages, waiting up to ``timeout`` for the first.

        Returns:
            A possibly empty list of ``Delivery``.
        """
        return self._get_many(n, timeout)

    def _get_many(
        self, n: int, timeout: float | None, consumer: str | None = None
    ) -> list[Delivery]:
        """:meth:`get_many` on behalf of ``consumer`` (a worker id the journal records)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigurationError(f"get_many takes n >= 1, got {n!r}")
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout < 0):
            raise ConfigurationError(f"timeout must be seconds >= 0 or None, got {timeout!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            claimed = self._claim(n, consumer)
            if claimed:
                deliveries = self._broker._deliveries(claimed)
                if deliveries:
                    return deliveries
                # All were undecodable and are dead letters now: look again at once.
                continue
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return []
            self._broker._wait(self.name, remaining)

    def peek(self, n: int = 10) -> list[tuple[Message, str]]:
        """Read up to ``n`` waiting or in-flight messages without claiming them.

        Returns:
            ``(message, state)`` pairs; state is ``ready``, ``scheduled``,
            ``waiting_for_key`` or ``in_flight``.
        """
        inspect = Inspect.of(self._broker.backend, "peek")
        rows = inspect.peek(self.name, n, tenant=self.tenant)
        return [
            (self._broker._message(env, attempt, lenient=True), state)
            for env, attempt, state in rows
        ]

    def stats(self) -> Any:
        """This queue's ``QueueStats`` (this tenant's, on a tenant handle)."""
        return self._broker._queue_stats(self.name, self.tenant)

    def dead_letters(self) -> Any:
        """This queue's dead letters (this tenant's, on a tenant handle)."""
        from pmsq.deadletters import DeadLetters

        return DeadLetters(self._broker, self.name, tenant=self.tenant)
