"""``Queue``: a handle on one queue (optionally scoped to one tenant)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any, overload

from pmsq import control
from pmsq.backends.base import Envelope
from pmsq.backends.families import Inspect
from pmsq.config import QueueConfig
from pmsq.deadletters import DeadLetters
from pmsq.delivery import Delivery
from pmsq.envelopes import build_envelope, to_message
from pmsq.errors import ConfigurationError, Empty
from pmsq.leases import get_many
from pmsq.message import Message, NewMessage
from pmsq.runtime import Runtime
from pmsq.stats import QueueStats

__all__ = ["Queue"]


class Queue:
    """A handle on one queue. Get it from ``broker.queue(name)`` or ``declare_queue``.

    A handle from a tenant handle (``broker.tenant("acme").queue(...)``) puts
    and gets only that tenant's messages.
    """

    def __init__(self, runtime: Runtime, name: str, *, tenant: str | None = None) -> None:
        self._runtime = runtime
        self.name = name
        self.tenant = tenant

    def __repr__(self) -> str:
        scope = f" tenant={self.tenant!r}" if self.tenant else ""
        return f"<Queue {self.name!r}{scope}>"

    @property
    def config(self) -> QueueConfig:
        """The queue's stored configuration."""
        return self._runtime.queue_config(self.name)

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
            self._runtime.require("transactional_put")
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
        expires: float | None = None,
        expires_at: dt.datetime | float | None = None,
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
            connection: The app's connection to the store's database (DB-API,
                SQLAlchemy ``Connection``/``Session``, Django connection; see
                ``pmsq.connections``): the message commits or rolls back with the app's
                transaction.
            expires: Seconds from now after which it is not delivered: a
                message still undelivered then becomes a dead letter with
                reason ``expired`` (backends with the ``control`` capability).
            expires_at: Or the time it expires (aware datetime or epoch seconds).

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
            self._runtime,
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
            expires=expires,
            expires_at=expires_at,
        )
        return self._runtime.store([env], connection=self._connection(connection))[0]

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
                    self._runtime,
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
                    expires=m.expires,
                    expires_at=m.expires_at,
                )
            )
        if not envs:
            return []
        return self._runtime.store(envs, connection=self._connection(connection))

    @overload
    def cancel(
        self, message_id: str, *, tenant: str | None = None, connection: Any = None
    ) -> bool: ...

    @overload
    def cancel(
        self, message_id: Sequence[str], *, tenant: str | None = None, connection: Any = None
    ) -> int: ...

    @overload
    def cancel(self, *, key: str, tenant: str | None = None, connection: Any = None) -> int: ...

    def cancel(
        self,
        message_id: str | Sequence[str] | None = None,
        *,
        key: str | None = None,
        tenant: str | None = None,
        connection: Any = None,
    ) -> bool | int:
        """Withdraw messages that are not acked: waiting, delayed, waiting to retry, in flight.

        An in-flight holder's later ack, retry or extend raises ``LeaseLost``
        and changes nothing; a cancelled key head lets the next message of the
        key go. Dead letters are not touched (purge them). On a tenant handle
        only that tenant's messages are found.

        Args:
            message_id: A message id, or a list of them.
            key: Or every unacked message of this key (of ``tenant``: keys
                are scoped per tenant; without it, the tenantless key).
            tenant: The key's tenant (keys are per tenant); with ids, only
                messages of this tenant are cancelled. A tenant handle's own
                by default.
            connection: The app's connection to the store's database, as for
                :meth:`put`: the cancellation commits or rolls back with the
                app's transaction.

        Returns:
            For one id, whether it was removed; otherwise how many were.

        Raises:
            ConfigurationError: neither or both of ``message_id`` and ``key``,
                a tenant outside this handle's scope, an unusable
                ``connection``, or a backend without the ``control`` capability.
            StorageError: the store failed.
        """
        if (message_id is None) == (key is None):
            raise ConfigurationError("cancel takes a message id (or a list of ids) or key=")
        if key is not None:
            return len(
                control.cancel_key(
                    self._runtime,
                    self.name,
                    key,
                    tenant=self._tenant_for(tenant),
                    connection=connection,
                )
            )
        ids = [message_id] if isinstance(message_id, str) else list(message_id or ())
        removed = control.cancel_ids(
            self._runtime,
            self.name,
            ids,
            tenant=self._tenant_for(tenant),
            connection=connection,
        )
        return bool(removed) if isinstance(message_id, str) else len(removed)

    def reschedule(
        self,
        message_id: str,
        *,
        delay: float | None = None,
        not_before: dt.datetime | float | None = None,
    ) -> bool:
        """Move a waiting or delayed message's due time; it keeps its place in its key's order.

        Args:
            message_id: The message.
            delay: Due this many seconds from now.
            not_before: Or due at this time (aware datetime or epoch seconds).

        Returns:
            Whether it was moved (False: gone, dead, or in flight).

        Raises:
            ConfigurationError: not exactly one of ``delay`` and ``not_before``,
                a bad value, or a backend without the ``control`` capability.
        """
        return control.reschedule(
            self._runtime,
            self.name,
            message_id,
            tenant=self.tenant,
            delay=delay,
            not_before=not_before,
        )

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

        Raises:
            ConfigurationError: ``n`` is not an int >= 1 or ``timeout`` is negative.
        """
        return get_many(self._runtime, self.name, n, timeout, tenant=self.tenant)

    def peek(self, n: int = 10) -> list[tuple[Message, str]]:
        """Read up to ``n`` waiting or in-flight messages without claiming them.

        Returns:
            ``(message, state)`` pairs; state is ``ready``, ``scheduled``,
            ``waiting_for_key`` or ``in_flight``.
        """
        inspect = Inspect.of(self._runtime.backend, "peek")
        rows = inspect.peek(self.name, n, tenant=self.tenant)
        codec = self._runtime.codec
        return [
            (to_message(codec, env, attempt, lenient=True), state) for env, attempt, state in rows
        ]

    def stats(self) -> QueueStats:
        """This queue's ``QueueStats`` (this tenant's, on a tenant handle)."""
        return self._runtime.queue_stats(self.name, self.tenant)

    def dead_letters(self) -> DeadLetters:
        """This queue's dead letters (this tenant's, on a tenant handle)."""
        return DeadLetters(self._runtime, self.name, tenant=self.tenant)
