"""The optional families of a routed backend, each forwarding to the stores.

A routed backend has a family only when every one of its stores has it (so
no queue silently does less than its store alone would). Each family here is
a mixin of :class:`RoutedBackend`; :func:`routed_class` builds the class for
the set of families the stores share.

Forwarding is by queue wherever a method names one (``by_queue``), and by
merging or spanning the stores where it does not (history of a message id,
schedules). Adding a family is a mixin of a few lines and one entry in
``MIXINS``; a family whose methods take the queue first needs only
``by_queue`` (and ``merged`` for listings), for example::

    class RoutedControl(RoutedBackend, Control):
        cancel = by_queue("cancel")
        reschedule = by_queue("reschedule")
        pause = by_queue("pause")
        resume = by_queue("resume")
        pauses = merged("pauses")
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from pmsq.backends.base import Backend, Capabilities
from pmsq.backends.control_family import Control
from pmsq.backends.families import History, Inspect, Once, Settings, TransactionalPut, Transfer
from pmsq.backends.presence import Presence, WorkerBeat
from pmsq.backends.routed.backend import RoutedBackend
from pmsq.backends.schedule_family import (
    FireResult,
    Firing,
    ScheduleStore,
    StoredSchedule,
    merge_declaration,
)
from pmsq.backends.types import DedupRecord, Envelope, HistoryEvent, PauseRecord, StoredMessage
from pmsq.errors import ConfigurationError
from pmsq.message import Message

__all__ = ["MIXINS", "by_queue", "merged", "routed_class"]

#: The alert rules' settings keys name their queue (``pmsq.alerts.meta_key``).
_QUEUE_META_PREFIX = "alert:"


def by_queue(method: str) -> Callable[..., Any]:
    """A method that sends the call to the store of its first argument, a queue name."""

    def forward(self: RoutedBackend, queue: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.store_for(queue), method)(queue, *args, **kwargs)

    forward.__name__ = method
    return forward


def merged(method: str) -> Callable[..., Any]:
    """A method that concatenates the lists every store returns (their own queues only)."""

    def gather(self: RoutedBackend, *args: Any, **kwargs: Any) -> list[Any]:
        out: list[Any] = []
        for i, store in enumerate(self.stores):
            for item in getattr(store, method)(*args, **kwargs):
                queue = getattr(item, "queue", None)
                if queue is None or self.owns(i, queue):
                    out.append(item)
        return out

    gather.__name__ = method
    return gather


def _one_store(self: RoutedBackend, queues: Sequence[str], what: str) -> int:
    """The index of the one store all ``queues`` live in; refuses a mix."""
    where = {self.routes.index_for(q) for q in queues}
    if len(where) > 1:
        listed = "; ".join(f"{q} in {self.url_for(q)}" for q in sorted(set(queues)))
        raise ConfigurationError(
            f"{what} writes through one database, but these queues live in different "
            f"stores ({listed}); put to each store's queues separately, or route them "
            "to the store the connection belongs to"
        )
    return where.pop() if where else 0


class RoutedOutbox(RoutedBackend, TransactionalPut):
    """``put(connection=)``: only for queues of the connection's own store."""

    def put_in_transaction(
        self, envelopes: Sequence[Envelope], *, now: float, connection: Any
    ) -> list[str]:
        index = _one_store(self, [e.queue for e in envelopes], "connection=")
        store = TransactionalPut.of(self.stores[index])
        try:
            return store.put_in_transaction(envelopes, now=now, connection=connection)
        except ConfigurationError as exc:
            queues = ", ".join(sorted({e.queue for e in envelopes}))
            raise ConfigurationError(
                f"{queues} lives in {self.routes.urls[index]} (by the routes), and "
                f"connection= must be open on that store's database: {exc}"
            ) from exc


class RoutedOnce(RoutedBackend, Once):
    """``broker.once``: recorded in the store of the message's queue."""

    def once(
        self, message: Message, connection: Any, consumer: str | None = None
    ) -> contextlib.AbstractContextManager[bool]:
        return Once.of(self.store_for(message.queue)).once(message, connection, consumer)


class RoutedHistory(RoutedBackend, History):
    """The journal: by queue when one is named, else the stores' events merged by time."""

    def set_history(self, retention: float | None) -> None:
        for store in self.stores:
            History.of(store).set_history(retention)

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
        def ask(store: History) -> list[HistoryEvent]:
            return store.history(
                message_id=message_id,
                dedup_id=dedup_id,
                correlation_id=correlation_id,
                key=key,
                queue=queue,
                tenant=tenant,
                limit=limit,
            )

        if queue is not None:
            return ask(History.of(self.store_for(queue)))
        events = [
            e
            for i, store in enumerate(self.stores)
            for e in ask(History.of(store))
            if self.owns(i, e.queue)
        ]
        events.sort(key=lambda e: e.at)
        return events[-limit:] if limit > 0 else []

    def record(self, events: Sequence[HistoryEvent]) -> None:
        # An operator event belongs to its queue's store; one naming no queue
        # (queue "") goes to the first store, the default of the routes.
        for i, members in self.group(events, lambda e: e.queue).items():
            History.of(self.stores[i]).record([e for _, e in members])


class RoutedTransfer(RoutedBackend, Transfer):
    """Export and import (``pmsq migrate``), each record to its queue's store."""

    def export_messages(
        self, queue: str, *, after: str | None = None, limit: int = 500
    ) -> tuple[list[StoredMessage], str | None]:
        return Transfer.of(self.store_for(queue)).export_messages(queue, after=after, limit=limit)

    def import_messages(self, records: Sequence[StoredMessage], *, now: float) -> int:
        groups = self.group(records, lambda r: r.envelope.queue)
        return sum(
            Transfer.of(self.stores[i]).import_messages([r for _, r in members], now=now)
            for i, members in groups.items()
        )

    def export_dedup(self, queue: str, *, now: float) -> list[DedupRecord]:
        return Transfer.of(self.store_for(queue)).export_dedup(queue, now=now)

    def import_dedup(self, records: Sequence[DedupRecord]) -> int:
        groups = self.group(records, lambda r: r.queue)
        return sum(
            Transfer.of(self.stores[i]).import_dedup([r for _, r in members])
            for i, members in groups.items()
        )


class RoutedSettings(RoutedBackend, Settings):
    """Settings: a queue's alert rule lives with its queue, the rest in the default store."""

    def _settings_for(self, key: str) -> Settings:
        if key.startswith(_QUEUE_META_PREFIX):
            return Settings.of(self.store_for(key[len(_QUEUE_META_PREFIX) :]))
        return Settings.of(self.stores[0])

    def get_meta(self, key: str) -> str | None:
        return self._settings_for(key).get_meta(key)

    def set_meta(self, key: str, value: str | None) -> None:
        self._settings_for(key).set_meta(key, value)


class RoutedInspect(RoutedBackend, Inspect):
    """``peek``, in the queue's store."""

    peek = by_queue("peek")


class RoutedSchedules(RoutedBackend, ScheduleStore):
    """Schedules: each stored (and fired, exactly once) in the store of its queue."""

    def _own_schedules(self, index: int, rows: list[StoredSchedule]) -> list[StoredSchedule]:
        return [s for s in rows if self.owns(index, s.queue)]

    def save_schedule(self, schedule: StoredSchedule, *, now: float) -> StoredSchedule:
        home = self.routes.index_for(schedule.queue)
        moved = [
            (i, s)
            for i, store in enumerate(self.stores)
            if i != home
            for s in ScheduleStore.of(store).list_schedules()
            if (s.tenant, s.name) == (schedule.tenant, schedule.name) and self.owns(i, s.queue)
        ]
        if moved:
            # Re-declared onto a queue of another store: it keeps its cursor there, and the
            # old row goes after the new one is stored (a crash between them leaves two rows
            # rather than none; the next declaration removes the extra one).
            schedule = merge_declaration(moved[0][1], schedule, now)
        stored = ScheduleStore.of(self.stores[home]).save_schedule(schedule, now=now)
        for i, old in moved:
            ScheduleStore.of(self.stores[i]).delete_schedule(old.tenant, old.name)
        return stored

    def delete_schedule(self, tenant: str | None, name: str) -> bool:
        # Not short-circuited: a schedule moved with its queue may be in two stores.
        found = [ScheduleStore.of(s).delete_schedule(tenant, name) for s in self.stores]
        return any(found)

    def list_schedules(self) -> list[StoredSchedule]:
        rows = [
            s
            for i, store in enumerate(self.stores)
            for s in self._own_schedules(i, ScheduleStore.of(store).list_schedules())
        ]
        return sorted(rows, key=lambda s: (s.tenant is not None, s.tenant or "", s.name))

    def fire_schedules(self, firings: Sequence[Firing], *, now: float) -> list[FireResult]:
        home = {(s.tenant, s.name): s.queue for s in self.list_schedules()}
        out: list[FireResult] = [0] * len(firings)
        for index, members in self.group(
            firings, lambda f: home.get((f.tenant, f.name)) or _firing_queue(f)
        ).items():
            got = ScheduleStore.of(self.stores[index]).fire_schedules(
                [f for _, f in members], now=now
            )
            for (pos, _), result in zip(members, got, strict=True):
                out[pos] = result
        return out


def _firing_queue(firing: Firing) -> str:
    if firing.envelopes:
        return firing.envelopes[0].queue
    raise ConfigurationError(f"schedule {firing.name!r} is no longer stored")


class RoutedControl(RoutedBackend, Control):
    """Cancel, reschedule and pauses: in the store of the queue they name."""

    cancel = by_queue("cancel")
    cancel_key = by_queue("cancel_key")
    reschedule = by_queue("reschedule")
    resume = by_queue("resume")

    def pause(self, record: PauseRecord, *, now: float) -> None:
        Control.of(self.store_for(record.queue)).pause(record, now=now)

    def pauses(self, *, now: float) -> list[PauseRecord]:
        found: list[PauseRecord] = merged("pauses")(self, now=now)
        return sorted(found, key=lambda p: (p.queue, p.tenant or "", p.key or ""))


class RoutedPresence(RoutedBackend, Presence):
    """Worker heartbeats: a worker beats in each store that holds queues it serves."""

    def beat_worker(self, beat: WorkerBeat) -> None:
        groups = self.group(beat.queues, lambda q: q)
        # A worker serving none of the routed queues still shows in the default store.
        for i in groups or {0: []}:
            queues = tuple(q for _, q in groups.get(i, []))
            Presence.of(self.stores[i]).beat_worker(attrs.evolve(beat, queues=queues))

    def forget_worker(self, worker_id: str) -> bool:
        forgot = [Presence.of(store).forget_worker(worker_id) for store in self.stores]
        return any(forgot)

    def list_workers(self, *, since: float) -> list[WorkerBeat]:
        seen: dict[str, WorkerBeat] = {}
        for store in self.stores:
            for beat in Presence.of(store).list_workers(since=since):
                if (old := seen.get(beat.id)) is not None:
                    beat = attrs.evolve(
                        beat,
                        queues=tuple(sorted({*old.queues, *beat.queues})),
                        last_seen=max(old.last_seen, beat.last_seen),
                        started_at=min(old.started_at, beat.started_at),
                    )
                seen[beat.id] = beat
        return sorted(seen.values(), key=lambda b: (b.host, b.pid, b.id))


#: The routed mixin of each family capability.
MIXINS: dict[str, type[RoutedBackend]] = {
    "transactional_put": RoutedOutbox,
    "once": RoutedOnce,
    "history": RoutedHistory,
    "transfer": RoutedTransfer,
    "settings": RoutedSettings,
    "inspect": RoutedInspect,
    "schedules": RoutedSchedules,
    "presence": RoutedPresence,
    "control": RoutedControl,
}


def _capabilities(flags: tuple[tuple[str, bool], ...]) -> Capabilities:
    values: dict[str, Any] = dict(flags)
    return attrs.evolve(Capabilities(), **values)


@functools.cache
def _build(
    families: frozenset[str],
    flags: tuple[tuple[str, bool], ...],
    name: str,
    refusals: tuple[tuple[str, str], ...],
) -> type:
    bases = tuple(MIXINS[f] for f in MIXINS if f in families) or (RoutedBackend,)
    namespace = {
        "capabilities": _capabilities(flags),
        "name": name,
        "refusals": dict(refusals),
        "__module__": __name__,
    }
    return type("RoutedBackend", bases, namespace)


def routed_class(stores: Sequence[Backend]) -> type[RoutedBackend]:
    """The routed backend class for ``stores``: the families and flags all of them have.

    A store's family unknown here (added to pmsq after this module) is left
    out rather than forwarded wrongly: it is refused with a clear error.
    """
    families = frozenset.intersection(*(s.capabilities.families for s in stores))
    flags = tuple(
        (f, all(getattr(s.capabilities, f) for s in stores)) for f in Capabilities.flags()
    )
    names = []
    for s in stores:
        if s.name not in names:
            names.append(s.name)
    refusals = tuple(
        (
            cap,
            f"a routed broker has only what all its stores have; {_lacking(stores, cap)} lacks it",
        )
        for cap in Capabilities.family_names()
        if cap not in families
    )
    cls: type[RoutedBackend] = _build(families, flags, f"routed ({' + '.join(names)})", refusals)
    return cls


def _lacking(stores: Sequence[Backend], capability: str) -> str:
    names = sorted({s.name for s in stores if capability not in s.capabilities.families})
    return f"the {' and '.join(names)} store"
