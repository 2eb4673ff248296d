"""``pmsq.Schedule``: a stored schedule as the app and operators read it."""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs

from pmsq.message import utc_from_epoch

__all__ = ["Schedule"]


@attrs.frozen
class Schedule:
    """A recurring message: which queue, when, and what it carries.

    Attributes:
        name: Unique per store, and per tenant for a tenant's schedules.
        queue: Where its messages go.
        cron: Five-field cron expression read in ``tz``, or ``None``.
        every: Period in seconds, or ``None``.
        tz: IANA time zone of ``cron`` (default ``"UTC"``).
        next_at: The next slot (aware UTC datetime), or ``None`` if none is left.
        last_at: The last slot fired (aware UTC datetime), or ``None``.
        paused: Whether a pause in force holds what it makes (its queue's, its
            tenant's on that queue, or its key's): it still fires on time, and
            its messages wait for the resume like any other put.
        payload: The payload of each message.
        key: Key of each message.
        tenant: Its tenant (and its messages'), or ``None``.
        priority: Priority of each message.
        headers: Headers of each message (besides ``pmsq.schedule``).
        catch_up: ``"latest"``, ``"all"`` or ``"none"`` (missed slots after downtime).
        fired_at: When the last slot was fired (aware UTC datetime), or ``None``.
    """

    name: str
    queue: str
    cron: str | None
    every: float | None
    tz: str
    next_at: dt.datetime | None
    last_at: dt.datetime | None
    paused: bool = False
    payload: Any = None
    key: str | None = None
    tenant: str | None = None
    priority: int = 0
    headers: dict[str, Any] = attrs.field(factory=dict)
    catch_up: str = "latest"
    fired_at: dt.datetime | None = None

    @property
    def lag(self) -> float | None:
        """Seconds the last slot fired after it came due, or ``None`` before the first."""
        if self.last_at is None or self.fired_at is None:
            return None
        return max(0.0, (self.fired_at - self.last_at).total_seconds())

    def overdue(self, now: dt.datetime | float) -> float:
        """Seconds the next slot is past due at ``now`` (0 when it is not due yet)."""
        if self.next_at is None:
            return 0.0
        at = now if isinstance(now, dt.datetime) else utc_from_epoch(now)
        return max(0.0, (at - self.next_at).total_seconds())

    @property
    def timing(self) -> str:
        """``cron`` with its zone, or ``every``, as one short human string."""
        if self.cron is not None:
            return self.cron if self.tz == "UTC" else f"{self.cron} ({self.tz})"
        assert self.every is not None
        return f"every {self.every:g}s"
