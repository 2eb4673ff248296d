"""The schedule family: what a backend provides to store schedules and fire them exactly once.

A backend opts in as a whole by mixing in :class:`ScheduleStore`; one
without it makes every schedule call raise ``ConfigurationError`` naming the
backend and the capability (:func:`schedule_store`). The broker keeps all
time logic (``pmsq.schedules.slots``); a backend stores rows and commits
firings. Its one subtle duty is :meth:`ScheduleStore.fire_schedules`: in one
transaction, per firing, a compare-and-set of the schedule's ``version``
and, only if it won, the firing's messages through the backend's ordinary
put path. Any number of brokers racing with the same plan therefore make
one set of messages: the losers' compare-and-set finds a newer version.
"""

from __future__ import annotations

import abc
import json
import math
from collections.abc import Sequence
from typing import Any

import attrs

from pmsq.backends.families import Family
from pmsq.backends.types import Envelope
from pmsq.errors import ConfigurationError, PmsqError

__all__ = [
    "FireResult",
    "Firing",
    "ScheduleStore",
    "StoredSchedule",
    "dump_definition",
    "load_schedule",
    "merge_declaration",
    "schedule_store",
]


@attrs.frozen
class StoredSchedule:
    """A schedule as stored: its definition, the message it makes, and its cursor.

    Attributes:
        name: Unique per tenant (``None`` tenant: the store's own schedules).
        tenant: The tenant owning it and its messages, or ``None``.
        queue: Where its messages go.
        cron: Five-field cron expression, or ``None``.
        every: Period in seconds, or ``None``.
        tz: IANA zone of ``cron``.
        anchor: ``every`` slots are ``anchor + k * every`` (``k >= 1``).
        catch_up: ``"latest"``, ``"all"`` or ``"none"``.
        data: The encoded payload of each message.
        format: The codec format of ``data``.
        key: Key of each message.
        priority: Priority of each message.
        headers: The user's headers as JSON text, or ``None``.
        created_at: When it was first declared (epoch seconds).
        next_at: The next slot to fire (the cursor), or ``None`` if none is left.
        last_at: The last slot fired, or ``None``.
        fired_at: When the last slot was fired.
        version: Bumped by every update and firing (the compare-and-set value).
    """

    name: str
    tenant: str | None
    queue: str
    cron: str | None
    every: float | None
    tz: str
    anchor: float
    catch_up: str
    data: bytes
    format: str
    key: str | None
    priority: int
    headers: str | None
    created_at: float
    next_at: float | None
    last_at: float | None = None
    fired_at: float | None = None
    version: int = 0


@attrs.frozen
class Firing:
    """One schedule's firing, prepared by the broker and committed by the backend.

    Attributes:
        name: The schedule.
        tenant: Its tenant.
        version: The version the plan was made from; the firing applies only
            if the stored version is still this one.
        next_at: The new cursor.
        last_at: The new last slot fired.
        fired_at: When it fired (``now``), or the previous value if nothing fired.
        envelopes: The messages to put (possibly none: missed slots skipped).
    """

    name: str
    tenant: str | None
    version: int
    next_at: float | None
    last_at: float | None
    fired_at: float | None
    envelopes: tuple[Envelope, ...]


#: Per firing: the messages it made (0 when another broker fired it first), or
#: the error that stopped it (its cursor stays, so a later run tries again).
FireResult = int | PmsqError


class ScheduleStore(Family):
    """The family of a backend that stores schedules (see the module docs)."""

    capability = "schedules"

    @abc.abstractmethod
    def save_schedule(self, schedule: StoredSchedule, *, now: float) -> StoredSchedule:
        """Insert ``schedule``, or update the stored one of that tenant and name.

        The merge with a stored schedule is :func:`merge_declaration`, run in
        the same transaction as the write.

        Returns:
            The schedule as stored.
        """

    @abc.abstractmethod
    def delete_schedule(self, tenant: str | None, name: str) -> bool:
        """Remove a schedule; whether it existed."""

    @abc.abstractmethod
    def list_schedules(self) -> list[StoredSchedule]:
        """Every stored schedule, ordered by tenant (tenantless first) and name."""

    @abc.abstractmethod
    def fire_schedules(self, firings: Sequence[Firing], *, now: float) -> list[FireResult]:
        """Commit firings in one transaction; per firing, how many messages it made.

        Per firing: compare-and-set of the stored version, then (if it won)
        the update of the cursor and the put of its envelopes, as a unit. A
        firing whose put fails (``QueueFull``...) is undone alone.
        """

    def due_schedules(self, now: float) -> list[StoredSchedule]:
        """Schedules whose cursor is at or before ``now`` (default: filters the list)."""
        return [s for s in self.list_schedules() if s.next_at is not None and s.next_at <= now]

    def next_schedule_at(self) -> float | None:
        """The earliest cursor of any schedule (a wake-up hint for workers)."""
        cursors = [s.next_at for s in self.list_schedules() if s.next_at is not None]
        return min(cursors, default=None)


def schedule_store(backend: Any) -> ScheduleStore:
    """``backend`` as a :class:`ScheduleStore`.

    Raises:
        ConfigurationError: naming the backend and the capability when it has none.
    """
    if not isinstance(backend, ScheduleStore):
        raise ConfigurationError(
            f"the {backend.name} backend does not support schedules; use the SQLite or "
            "PostgreSQL backend for recurring work, or run an external scheduler that puts"
        )
    return backend


def merge_declaration(
    old: StoredSchedule | None, new: StoredSchedule, now: float
) -> StoredSchedule:
    """The schedule to store when ``new`` is declared over ``old``.

    Unchanged timing keeps the cursor, anchor and history, so re-declaring at
    every app start neither skips nor repeats a slot. Changed timing starts
    afresh from ``now`` but never before the last fired slot, so no slot
    fires twice even after the clock stepped back.
    """
    from pmsq.schedules.slots import Timing

    if old is None:
        return attrs.evolve(new, version=1)
    same = (old.cron, old.every, old.tz) == (new.cron, new.every, new.tz)
    if same:
        return attrs.evolve(
            new,
            anchor=old.anchor,
            created_at=old.created_at,
            next_at=old.next_at,
            last_at=old.last_at,
            fired_at=old.fired_at,
            version=old.version + 1,
        )
    since = max(now, old.last_at if old.last_at is not None else -math.inf)
    timing = Timing(new.cron, new.every, new.tz, anchor=new.anchor)
    return attrs.evolve(
        new,
        created_at=old.created_at,
        next_at=timing.next_after(since),
        last_at=old.last_at,
        fired_at=old.fired_at,
        version=old.version + 1,
    )


_DEFINITION = ("cron", "every", "tz", "anchor", "catch_up", "format", "key", "priority", "headers")


def dump_definition(s: StoredSchedule) -> str:
    """The definition columns of a schedule row, as JSON text."""
    body: dict[str, Any] = {f: getattr(s, f) for f in _DEFINITION}
    body["created_at"] = s.created_at
    return json.dumps(body, sort_keys=True)


def load_schedule(
    *,
    tenant: str | None,
    name: str,
    queue: str,
    definition: str,
    data: bytes,
    next_at: float | None,
    last_at: float | None,
    fired_at: float | None,
    version: int,
) -> StoredSchedule:
    """Rebuild a :class:`StoredSchedule` from a row (the inverse of :func:`dump_definition`)."""
    body = json.loads(definition)
    return StoredSchedule(
        name=name,
        tenant=tenant or None,
        queue=queue,
        data=bytes(data),
        next_at=next_at,
        last_at=last_at,
        fired_at=fired_at,
        version=version,
        created_at=float(body["created_at"]),
        **{f: body.get(f) for f in _DEFINITION},
    )
