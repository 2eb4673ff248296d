"""``TenantHandle``: one tenant's view of a broker."""

from __future__ import annotations

import datetime as dt
from typing import Any, overload

from pmsq import control
from pmsq.config import check_queue_name
from pmsq.deadletters import DeadLetters
from pmsq.errors import ConfigurationError
from pmsq.queue import Queue
from pmsq.routing import publish
from pmsq.runtime import Runtime
from pmsq.schedules.schedule import Schedule
from pmsq.stats import QueueStats, Stats

__all__ = ["TenantHandle"]


class TenantHandle:
    """Sees and touches only one tenant's messages: queues, publish, stats, dead letters, pauses.

    Passing another ``tenant=`` through it raises ``ConfigurationError``; ids
    of other tenants' messages simply match nothing.
    """

    def __init__(self, runtime: Runtime, tenant: str) -> None:
        self._runtime = runtime
        self.tenant = tenant

    def __repr__(self) -> str:
        return f"<TenantHandle {self.tenant!r}>"

    def queue(self, name: str) -> Queue:
        """This tenant's view of queue ``name`` (created with defaults if undeclared).

        Raises:
            ConfigurationError: invalid name.
        """
        self._runtime.ensure_queue(check_queue_name(name))
        return Queue(self._runtime, name, tenant=self.tenant)

    def publish(
        self, topic: str, payload: Any, *, tenant: str | None = None, **options: Any
    ) -> list[str]:
        """Publish as this tenant (see ``Broker.publish``).

        Raises:
            ConfigurationError: ``tenant`` names another tenant.
            The errors of ``Broker.publish``.
        """
        if tenant is not None and tenant != self.tenant:
            raise ConfigurationError(
                f"this handle is scoped to tenant {self.tenant!r}; it cannot publish as {tenant!r}"
            )
        return publish(self._runtime, topic, payload, tenant=self.tenant, **options)

    @overload
    def stats(self, queue: None = None) -> Stats: ...

    @overload
    def stats(self, queue: str) -> QueueStats: ...

    def stats(self, queue: str | None = None) -> Stats | QueueStats:
        """This tenant's figures: ``Stats`` of every queue, or one ``QueueStats``."""
        if queue is not None:
            return self._runtime.queue_stats(check_queue_name(queue), self.tenant)
        return self._runtime.stats(self.tenant)

    def dead_letters(self, queue: str) -> DeadLetters:
        """This tenant's dead letters of ``queue``."""
        return DeadLetters(self._runtime, check_queue_name(queue), tenant=self.tenant)

    def schedule(self, name: str, *, tenant: str | None = None, **options: Any) -> Schedule:
        """Create or update this tenant's schedule ``name`` (see ``Broker.schedule``)."""
        from pmsq.schedules.service import declare

        return declare(self._runtime, name, tenant=self._own(tenant, "schedule"), **options)

    def schedules(self) -> list[Schedule]:
        """This tenant's schedules."""
        from pmsq.schedules.service import list_schedules

        return list_schedules(self._runtime, tenant=self.tenant, all_tenants=False)

    def unschedule(self, name: str) -> bool:
        """Delete this tenant's schedule ``name``; whether it existed."""
        from pmsq.schedules.service import remove

        return remove(self._runtime, name, tenant=self.tenant)

    def pause(
        self,
        queue: str,
        *,
        key: str | None = None,
        until: dt.datetime | float | None = None,
        reason: str = "",
        tenant: str | None = None,
    ) -> control.Pause:
        """Pause this tenant's messages of ``queue`` (or one key of it); see ``Broker.pause``.

        Args:
            queue: The queue.
            key: Only this key of the tenant (other keys flow).
            until: Resume by itself at this time (aware datetime or epoch seconds).
            reason: Why (shown in stats, the monitor and ``pmsq trace``).
            tenant: This handle's tenant, if given at all.

        Returns:
            The stored ``pmsq.Pause``.

        Raises:
            ConfigurationError: another tenant, invalid arguments, or a backend
                without the ``control`` capability.
        """
        return control.pause(
            self._runtime,
            check_queue_name(queue),
            tenant=self._own(tenant, "pause"),
            key=key,
            until=until,
            reason=reason,
        )

    def resume(self, queue: str, *, key: str | None = None, tenant: str | None = None) -> bool:
        """Lift this tenant's pause of ``queue`` (or of one key); whether one was in force.

        Raises:
            ConfigurationError: another tenant, invalid arguments, or a backend
                without the ``control`` capability.
        """
        return control.resume(
            self._runtime, check_queue_name(queue), tenant=self._own(tenant, "resume"), key=key
        )

    def pauses(self) -> list[control.Pause]:
        """This tenant's pauses in force (of the tenant and of its keys).

        Raises:
            ConfigurationError: a backend without the ``control`` capability.
        """
        return control.pauses(self._runtime, tenant=self.tenant)

    def _own(self, tenant: str | None, verb: str) -> str:
        if tenant is not None and tenant != self.tenant:
            raise ConfigurationError(
                f"this handle is scoped to tenant {self.tenant!r}; it cannot {verb} as {tenant!r}"
            )
        return self.tenant
