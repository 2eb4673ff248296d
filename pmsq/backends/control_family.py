"""The control family: cancel, reschedule, expire, snooze, pause and the circuit breaker.

A backend opts in as a whole by mixing in :class:`Control` (capability
``"control"``); one without it makes every control call raise
``ConfigurationError`` naming the backend and ``control``
(``Control.of(backend, use)``), never a silent no-op. The broker keeps the
argument checks and the public types (``pmsq.Pause``); the backend owns what
must be atomic with other processes' claims and settlements.

Besides its own methods, a backend with this family promises, in the verbs
every backend has:

- ``put_many``: it stores ``Envelope.expires_at``; ``claim`` never delivers
  a message found expired (``expires_at <= now``) but dead-letters it with
  reason ``expired`` and error type ``"Expired"`` (journal ``expired``).
- ``claim``: skips what a pause in force holds (a queue-wide pause, a tenant
  pause, a key pause: other keys and tenants flow), so nothing spends an
  attempt while paused; a pause whose ``until`` has passed is no longer in
  force. A circuit pause past its ``until`` lets exactly one message of its
  scope through (the half-open probe) while the rest of the scope stays held.
- ``settle``: takes the action ``"snooze"`` (like ``"retry"`` at
  ``available_at``, but the attempt is not counted, it is not a failure, and
  the key stays blocked; journal ``snoozed``). With ``QueueConfig.circuit``
  set, a settlement with ``failed=True`` counts toward the breaker of its
  scope: ``failures`` of them within ``within`` seconds store a circuit
  pause (``PauseRecord.circuit``, reason ``circuit open: <last error>``,
  ``until = now + open_for``; journal ``circuit_opened``). The probe's ack
  removes it (journal ``circuit_closed``); its failure opens it again for
  ``open_for``. Releases, retries, rejects and snoozes do not count.
- ``stats``: ``QueueStats.paused`` is True while a queue-wide pause is in force.

Journal events (with the ``History`` family): ``cancelled``, ``rescheduled``,
``expired``, ``snoozed``, ``paused``, ``resumed``, ``circuit_opened``,
``circuit_closed``. Pause events belong to no message: their ``message_id``
is ``""`` and their ``key``/``tenant`` are the scope's.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

from pmsq.backends.families import Family
from pmsq.backends.types import PauseRecord

__all__ = ["Control", "PauseRecord"]


class Control(Family):
    """The family of a backend that can cancel, reschedule, expire, snooze and pause.

    See the module documentation for what it adds to ``claim``, ``settle``
    and ``stats``.
    """

    capability = "control"

    @abc.abstractmethod
    def cancel(
        self,
        queue: str,
        message_ids: Sequence[str],
        *,
        tenant: str | None = None,
        now: float,
        connection: Any = None,
    ) -> list[str]:
        """Remove messages that are not settled for good; the ids actually removed.

        A message waiting, delayed, waiting to retry or in flight is removed
        (an in-flight holder's later ack, retry or extend then finds its lease
        lost and changes nothing); dead letters and unknown ids are left alone.
        A removed head of a key's line releases the key: the next message of
        the key becomes claimable. Journal: ``cancelled`` per message (with
        the state it was in).

        Args:
            queue: The messages' queue (ids of other queues match nothing).
            message_ids: The messages.
            tenant: Only this tenant's messages (``None``: any tenant's).
            now: The broker's clock.
            connection: The app's DB-API connection to the store's database:
                the removal joins its open transaction and is undone by its
                rollback (like ``put_in_transaction``). ``None``: commit now.

        Raises:
            ConfigurationError: ``connection`` is not a connection to this store.
        """

    @abc.abstractmethod
    def cancel_key(
        self,
        queue: str,
        key: str,
        *,
        tenant: str | None,
        now: float,
        connection: Any = None,
    ) -> list[str]:
        """Remove every message of ``tenant``'s ``key`` that :meth:`cancel` would; their ids.

        ``tenant=None`` is the tenantless key (keys are scoped per tenant).
        Arguments and errors as for :meth:`cancel`.
        """

    @abc.abstractmethod
    def reschedule(
        self,
        queue: str,
        message_id: str,
        available_at: float,
        *,
        tenant: str | None = None,
        now: float,
    ) -> bool:
        """Move a waiting or delayed message's due time to ``available_at``.

        It keeps its place in its key's line (a later message of the key still
        waits for it). Journal: ``rescheduled`` (with the new due time).

        Returns:
            False when the message is gone, dead, or in flight (nothing changed).
        """

    @abc.abstractmethod
    def pause(self, record: PauseRecord, *, now: float) -> None:
        """Store a pause, replacing any pause of the same scope. Journal: ``paused``.

        Puts are still accepted and messages in flight finish normally;
        claims skip what it holds (see the module documentation).
        """

    @abc.abstractmethod
    def resume(self, queue: str, tenant: str | None, key: str | None, *, now: float) -> bool:
        """Remove the pause of exactly this scope; whether one was in force. Journal: ``resumed``.

        ``resume(queue, None, None)`` lifts only the queue-wide pause, not
        tenant or key pauses of the queue. Resuming a circuit pause closes
        the circuit (its failure count starts afresh).
        """

    @abc.abstractmethod
    def pauses(self, *, now: float) -> list[PauseRecord]:
        """Every pause in force at ``now``, ordered by queue, tenant and key.

        A pause whose ``until`` has passed is not listed; an open circuit
        waiting for its probe is (its ``until`` is in the past then).
        """
