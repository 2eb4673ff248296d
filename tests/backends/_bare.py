"""``BareSQLite``: a backend with the required verbs only, kept in a SQLite store.

It delegates each required verb to a ``SQLiteBackend`` and implements no
family and no optional method, so everything else runs on the interface's
defaults: the settlement conveniences, ``queue_config``, ``ensure_queue``,
``check``, ``wait_for_change`` and ``ready_queues``. Tests use it as "a
plugin that did the minimum".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pmsq.backends import Backend, Claimed, Envelope, Receipt, Settlement, StoredDeadLetter
from pmsq.backends.sqlite import SQLiteBackend
from pmsq.config import QueueConfig
from pmsq.stats import Stats


class BareSQLite(Backend):
    name = "Bare"

    def __init__(self, url: str, **options: Any) -> None:
        options.setdefault("history", None)
        self._store = SQLiteBackend(url, **options)

    def declare_queue(self, config: QueueConfig) -> None:
        self._store.declare_queue(config)

    def list_queues(self) -> list[QueueConfig]:
        return self._store.list_queues()

    def bind(self, pattern: str, queue: str) -> None:
        self._store.bind(pattern, queue)

    def unbind(self, pattern: str, queue: str) -> bool:
        return self._store.unbind(pattern, queue)

    def bindings(self) -> list[tuple[str, str]]:
        return self._store.bindings()

    def put_many(self, envelopes: Sequence[Envelope], *, now: float) -> list[str]:
        return self._store.put_many(envelopes, now=now)

    def claim(
        self,
        queue: str,
        n: int,
        *,
        now: float,
        tenant: str | None = None,
        consumer: str | None = None,
    ) -> list[Claimed]:
        return self._store.claim(queue, n, now=now, tenant=tenant)

    def settle(self, settlements: Sequence[Settlement], *, now: float) -> list[bool]:
        return self._store.settle(settlements, now=now)

    def extend(self, receipt: Receipt, seconds: float, *, now: float) -> float | None:
        return self._store.extend(receipt, seconds, now=now)

    def dead_letters(
        self,
        queue: str,
        *,
        tenant: str | None = None,
        ids: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[StoredDeadLetter]:
        return self._store.dead_letters(queue, tenant=tenant, ids=ids, limit=limit)

    def redrive(
        self, queue: str, ids: Sequence[str] | None, *, now: float, tenant: str | None = None
    ) -> int:
        return self._store.redrive(queue, ids, now=now, tenant=tenant)

    def purge(self, queue: str, ids: Sequence[str] | None, *, tenant: str | None = None) -> int:
        return self._store.purge(queue, ids, tenant=tenant)

    def stats(self, queue: str | None = None, *, now: float, tenant: str | None = None) -> Stats:
        return self._store.stats(queue, now=now, tenant=tenant)

    def close(self) -> None:
        self._store.close()
