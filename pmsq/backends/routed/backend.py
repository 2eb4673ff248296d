"""``RoutedBackend``: several stores as one ``Backend``, each queue in the store it routes to.

The Broker, its queue handles, workers, stats, monitor and alerts talk to one
backend; this one sends each call to the store of the queue it names
(:class:`~pmsq.backends.routed.routes.Routes`) and merges the answers of
calls that name no queue (``stats()``, ``list_queues``, ``bindings``). Every
store only ever sees its own queues, so each keeps its guarantees (per-key
order, leases, dedup) exactly as when used alone.

Across stores, nothing is atomic: a publish whose copies go to two stores
commits each store's copies together, one store after the other. When some
stores stored their copies and another failed, :class:`PartialPublish`
says which is which; a retry with the same ``dedup_id`` completes it (the
stores that have it answer with their first copy's id).

Only the queues a store is routed are read from it: a queue left behind in
an old store (after ``pmsq migrate --queue`` moved it) is not seen twice.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from pmsq.backends.base import Backend
from pmsq.backends.routed.routes import Routes
from pmsq.backends.routed.watch import ChangeWatch
from pmsq.backends.types import (
    Claimed,
    Envelope,
    Readiness,
    Receipt,
    Settlement,
    StoredDeadLetter,
)
from pmsq.config import QueueConfig
from pmsq.errors import ConfigurationError, PartialPublish, PmsqError
from pmsq.stats import Stats

__all__ = ["RoutedBackend"]

T = TypeVar("T")


class RoutedBackend(Backend):
    """Several stores behind one backend; see the module docs.

    Made by :func:`pmsq.backends.routed.open_routed`, whose class also has
    the families every store has (and only those).

    Args:
        routes: Where each queue lives.
        stores: The open stores, in the order of ``routes.urls``.
        interval: Longest each store's change watcher blocks per call (the
            broker's ``poll_interval``).
    """

    name = "routed"

    def __init__(self, routes: Routes, stores: Sequence[Backend], *, interval: float) -> None:
        if len(stores) != len(routes.urls):
            raise ConfigurationError("one open store is needed per routed URL")
        self.routes = routes
        self.stores: tuple[Backend, ...] = tuple(stores)
        #: The default store's URL (what tools print as "the store").
        self.url = routes.default
        self._watch = ChangeWatch([s.wait_for_change for s in self.stores], interval)

    def __repr__(self) -> str:
        return f"<RoutedBackend {' + '.join(self.routes.urls)}>"

    # -- routing -------------------------------------------------------------------
    def store_for(self, queue: str) -> Backend:
        """The store ``queue`` lives in."""
        return self.stores[self.routes.index_for(queue)]

    def url_for(self, queue: str) -> str:
        """The URL of the store ``queue`` lives in."""
        return self.routes.url_for(queue)

    def owns(self, index: int, queue: str) -> bool:
        """Whether store number ``index`` is where ``queue`` lives."""
        return self.routes.index_for(queue) == index

    def group(self, items: Iterable[T], queue_of: Any) -> dict[int, list[tuple[int, T]]]:
        """``items`` by store index, each with its position (stores in route order)."""
        out: dict[int, list[tuple[int, T]]] = defaultdict(list)
        for pos, item in enumerate(items):
            out[self.routes.index_for(queue_of(item))].append((pos, item))
        return dict(sorted(out.items()))

    # -- configuration -------------------------------------------------------------
    def declare_queue(self, config: QueueConfig) -> None:
        if config.fallback is not None:
            here, there = self.url_for(config.name), self.url_for(config.fallback)
            if here != there:
                raise ConfigurationError(
                    f"queue {config.name!r} lives in {here} but its fallback "
                    f"{config.fallback!r} lives in {there}: a dead letter and its fallback "
                    "copy commit in one transaction, so route both to the same store"
                )
        self.store_for(config.name).declare_queue(config)

    def list_queues(self) -> list[QueueConfig]:
        out = [
            c for i, s in enumerate(self.stores) for c in s.list_queues() if self.owns(i, c.name)
        ]
        return sorted(out, key=lambda c: c.name)

    def queue_config(self, name: str) -> QueueConfig | None:
        return self.store_for(name).queue_config(name)

    def ensure_queue(self, config: QueueConfig) -> None:
        self.store_for(config.name).ensure_queue(config)

    def bind(self, pattern: str, queue: str) -> None:
        # A binding lives with its queue, so the queue's store alone still routes to it.
        self.store_for(queue).bind(pattern, queue)

    def unbind(self, pattern: str, queue: str) -> bool:
        return self.store_for(queue).unbind(pattern, queue)

    def bindings(self) -> list[tuple[str, str]]:
        return self._own_bindings([s.bindings() for s in self.stores])

    def bindings_on(self, connection: Any) -> list[tuple[str, str]]:
        """The bindings, reading the store ``connection`` is open on through it.

        ``publish(connection=)`` reads bindings through the app's connection
        because its open transaction may hold that store's write lock; the
        other stores are other databases and are read as usual.
        """
        per_store = []
        for store in self.stores:
            reader = getattr(store, "bindings_on", None)
            rows: list[tuple[str, str]] | None = None
            if reader is not None:
                try:
                    rows = reader(connection)
                except ConfigurationError:
                    rows = None  # not this store's connection
            per_store.append(rows if rows is not None else store.bindings())
        return self._own_bindings(per_store)

    def _own_bindings(self, per_store: Sequence[list[tuple[str, str]]]) -> list[tuple[str, str]]:
        return sorted(
            {(p, q) for i, rows in enumerate(per_store) for p, q in rows if self.owns(i, q)}
        )

    # -- the message lifecycle -------------------------------------------------------
    def put_many(self, envelopes: Sequence[Envelope], *, now: float) -> list[str]:
        groups = self.group(envelopes, lambda e: e.queue)
        if len(groups) <= 1:
            return next(iter(self.stores[i] for i in groups), self.stores[0]).put_many(
                envelopes, now=now
            )
        # One transaction per store; every store is tried even after one failed, so a
        # failure leaves as few stores without the message as it can.
        ids: list[str | None] = [None] * len(envelopes)
        stored: dict[str, list[str]] = {}
        failed: dict[str, PmsqError] = {}
        for index, members in groups.items():
            url = self.routes.urls[index]
            queues = [e.queue for _, e in members]
            try:
                got = self.stores[index].put_many([e for _, e in members], now=now)
            except PmsqError as exc:
                failed[url] = exc
                continue
            stored[url] = queues
            for (pos, _), mid in zip(members, got, strict=True):
                ids[pos] = mid
        if not failed:
            return [mid for mid in ids if mid is not None]
        first = next(iter(failed.values()))
        if not stored:
            raise first
        raise PartialPublish(stored=stored, failed=failed) from first

    def claim(
        self,
        queue: str,
        n: int,
        *,
        now: float,
        tenant: str | None = None,
        consumer: str | None = None,
    ) -> list[Claimed]:
        return self.store_for(queue).claim(queue, n, now=now, tenant=tenant, consumer=consumer)

    def settle(self, settlements: Sequence[Settlement], *, now: float) -> list[bool]:
        out: list[bool] = [False] * len(settlements)
        for index, members in self.group(settlements, lambda s: s.receipt.queue).items():
            oks = self.stores[index].settle([s for _, s in members], now=now)
            for (pos, _), ok in zip(members, oks, strict=True):
                out[pos] = ok
        return out

    def extend(self, receipt: Receipt, seconds: float, *, now: float) -> float | None:
        return self.store_for(receipt.queue).extend(receipt, seconds, now=now)

    # -- operators -------------------------------------------------------------------
    def dead_letters(
        self,
        queue: str,
        *,
        tenant: str | None = None,
        ids: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[StoredDeadLetter]:
        return self.store_for(queue).dead_letters(queue, tenant=tenant, ids=ids, limit=limit)

    def redrive(
        self, queue: str, ids: Sequence[str] | None, *, now: float, tenant: str | None = None
    ) -> int:
        return self.store_for(queue).redrive(queue, ids, now=now, tenant=tenant)

    def purge(self, queue: str, ids: Sequence[str] | None, *, tenant: str | None = None) -> int:
        return self.store_for(queue).purge(queue, ids, tenant=tenant)

    def stats(self, queue: str | None = None, *, now: float, tenant: str | None = None) -> Stats:
        if queue is not None:
            return self.store_for(queue).stats(queue, now=now, tenant=tenant)
        snaps = [s.stats(None, now=now, tenant=tenant) for s in self.stores]
        queues = {
            name: qs
            for i, snap in enumerate(snaps)
            for name, qs in snap.queues.items()
            if self.owns(i, name)
        }
        return Stats(
            queues=dict(sorted(queues.items())),
            bindings=tuple(self._own_bindings([list(s.bindings) for s in snaps])),
            taken_at=dt.datetime.fromtimestamp(now, dt.UTC),
        )

    def check(self) -> list[str]:
        return [
            f"{url}: {p}"
            for url, s in zip(self.routes.urls, self.stores, strict=True)
            for p in s.check()
        ]

    def close(self) -> None:
        self._watch.close()
        errors: list[BaseException] = []
        for store in self.stores:
            try:
                store.close()
            except Exception as exc:  # close the others anyway
                errors.append(exc)
        if errors:
            raise errors[0]

    # -- wake-up hints -----------------------------------------------------------------
    def wait_for_change(self, since: object | None, timeout: float) -> object:
        return self._watch.wait_for_change(since, timeout)

    def ready_queues(self, queues: Sequence[str], *, now: float) -> Readiness:
        ready: set[str] = set()
        due: list[float] = []
        for index, members in self.group(queues, lambda q: q).items():
            answer = self.stores[index].ready_queues([q for _, q in members], now=now)
            ready |= answer.queues
            if answer.next_due is not None:
                due.append(answer.next_due)
        return Readiness(frozenset(ready), min(due, default=None))
