"""Optional abilities of a backend, grouped in families a backend opts into as a whole.

A family is an abstract mixin: a backend class that lists it among its bases
must implement all of its methods, and :class:`~pmsq.backends.Capabilities`
reports it (derived from the class, so it cannot claim what it lacks). Code
that needs a family asks for it with ``Family.of(backend)``, which raises a
``ConfigurationError`` naming the backend and the capability when it is
missing, so nothing ever silently does less.

- ``TransactionalPut`` (``transactional_put``): ``put_in_transaction``, the outbox.
- ``Once`` (``once``): ``once``, exactly-once effects in the app's transaction.
- ``History`` (``history``): ``set_history``, ``history``, ``record``; ``pmsq trace``.
- ``Transfer`` (``transfer``): ``export_messages``, ``import_messages``,
  ``export_dedup``, ``import_dedup``; ``pmsq migrate``.
- ``Settings`` (``settings``): ``get_meta``, ``set_meta``; alert rules.
- ``Inspect`` (``inspect``): ``peek``; ``pmsq peek``.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Self

from pmsq.backends.types import (
    DedupRecord,
    Envelope,
    HistoryEvent,
    StoredMessage,
)
from pmsq.errors import ConfigurationError

if TYPE_CHECKING:
    from pmsq.message import Message

__all__ = [
    "FAMILIES",
    "Family",
    "History",
    "Inspect",
    "Once",
    "Settings",
    "TransactionalPut",
    "Transfer",
    "refusal",
]


class Family(abc.ABC):  # noqa: B024 - a marker base; each family declares its own methods
    """Base of every family: names the capability it provides."""

    #: The capability name reported by ``Capabilities`` and used in errors.
    capability: ClassVar[str] = ""

    @classmethod
    def of(cls, backend: object, use: str | None = None) -> Self:
        """Return ``backend`` as this family, or raise if it does not implement it.

        ``History.of(broker.backend).history(...)`` is how pmsq reaches an
        optional ability: a backend without it fails loudly, never silently.

        Args:
            backend: The backend.
            use: The method about to be called, for the error message.

        Raises:
            ConfigurationError: naming the backend and the missing capability.
        """
        if isinstance(backend, cls):
            return backend
        raise refusal(backend, cls.capability, use)


class TransactionalPut(Family):
    """The transactional outbox: ``put(..., connection=app_conn)``."""

    capability = "transactional_put"

    @abc.abstractmethod
    def put_in_transaction(
        self, envelopes: Sequence[Envelope], *, now: float, connection: Any
    ) -> list[str]:
        """Store ``envelopes`` inside the caller's open transaction on ``connection``.

        Same results as :meth:`Backend.put_many`, but nothing is committed
        here: the messages become visible when (and if) the app commits, and
        vanish with its rollback.

        Raises:
            ConfigurationError: ``connection`` is not a connection to this store.
            QueueFull: a queue's ``max_depth`` or ``tenant_quota`` would be exceeded.
        """


class Once(Family):
    """Exactly-once effects: ``broker.once(message, connection=app_conn)``."""

    capability = "once"

    @abc.abstractmethod
    def once(
        self, message: Message, connection: Any, consumer: str | None = None
    ) -> contextlib.AbstractContextManager[bool]:
        """A context manager yielding whether ``message`` is new for ``consumer``.

        The record is written through the app's ``connection`` in its open
        transaction and committed only by the app, with its effects.

        Raises:
            ConfigurationError: ``connection`` is not usable for this store.
        """


class History(Family):
    """A message journal: what happened to each message, when and where (``pmsq trace``)."""

    capability = "history"

    @abc.abstractmethod
    def set_history(self, retention: float | None) -> None:
        """Keep journal events for ``retention`` seconds; ``None`` keeps no journal.

        Raises:
            ConfigurationError: ``retention`` is not a positive number or ``None``.
        """

    @abc.abstractmethod
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
        """

    @abc.abstractmethod
    def record(self, events: Sequence[HistoryEvent]) -> None:
        """Write events that happened outside any message verb, in one transaction.

        An operator's action (a dashboard's redrive, purge or pause) is
        journaled this way with who did it. ``process`` is the recording
        process's, whatever the events say; with no journal kept
        (``set_history(None)``) nothing is written.
        """


class Transfer(Family):
    """Moving a store between backends (``pmsq migrate``): export and import, ids kept."""

    capability = "transfer"

    @abc.abstractmethod
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
        """

    @abc.abstractmethod
    def import_messages(self, records: Sequence[StoredMessage], *, now: float) -> int:
        """Store exported messages as they were, atomically; return how many were new.

        Ids are kept, so importing a record whose id is already stored skips
        it: importing the same pages again is harmless. Each key's records
        join the tail of its line in the order given. In-flight records
        become pending (their lease belonged to the old store). No dedup,
        quota or fallback logic runs.
        """

    @abc.abstractmethod
    def export_dedup(self, queue: str, *, now: float) -> list[DedupRecord]:
        """Return the dedup ids of ``queue`` still remembered at ``now``."""

    @abc.abstractmethod
    def import_dedup(self, records: Sequence[DedupRecord]) -> int:
        """Remember dedup ids (one already remembered is kept); return how many were new."""


class Settings(Family):
    """Small settings every process of a store sees (alert rules)."""

    capability = "settings"

    @abc.abstractmethod
    def get_meta(self, key: str) -> str | None:
        """Return a stored setting, or ``None`` if unset."""

    @abc.abstractmethod
    def set_meta(self, key: str, value: str | None) -> None:
        """Store a setting every process sees; ``None`` removes it.

        Raises:
            ConfigurationError: ``key`` is reserved for the backend's own bookkeeping.
        """


class Inspect(Family):
    """Reading waiting messages without claiming them (``pmsq peek``)."""

    capability = "inspect"

    @abc.abstractmethod
    def peek(
        self, queue: str, n: int, *, tenant: str | None = None
    ) -> list[tuple[Envelope, int, str]]:
        """Read up to ``n`` waiting or in-flight messages: ``(envelope, attempt, state)``.

        ``state`` is ``"ready"``, ``"delayed"`` or ``"in_flight"``; reading
        changes nothing (no attempt is counted).
        """


#: Every family, in the order they are documented.
FAMILIES: tuple[type[Family], ...] = (
    TransactionalPut,
    Once,
    History,
    Transfer,
    Settings,
    Inspect,
)


def refusal(backend: object, capability: str, use: str | None = None) -> ConfigurationError:
    """The error for using ``capability`` on a backend that lacks it.

    Names the backend and the capability (underscores as spaces), the method
    asked for, and the backend's own explanation when it gives one in
    ``refusals``.
    """
    name = getattr(backend, "name", type(backend).__name__)
    words = capability.replace("_", " ")
    what = f"{words} ({use})" if use and use != capability else words
    notes: dict[str, str] = getattr(backend, "refusals", {})
    why = notes.get(capability) or (
        "see its documentation for the differences from the SQLite backend"
    )
    return ConfigurationError(f"the {name} backend does not support {what}: {why}")
